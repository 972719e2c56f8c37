"""Any input either loads or raises SpecError: never another exception, never a hang."""

from __future__ import annotations

import json

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lkit.build.ociconfig import ImageInfo, generate_all
from lkit.errors import SpecError
from lkit.spec import load_spec_text
from lkit.spec.loader import FILE_KEYS, TOP_KEYS
from lkit.spec.schema import ENTRY_KEYS

KEYS = list(TOP_KEYS + ENTRY_KEYS + FILE_KEYS) + ["format", "image", "name", "hostID", "memory", "x"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2000, 2**65), st.floats(allow_nan=False),
                    st.text(max_size=12), st.sampled_from(["all", "none", "host", "new", "CAP_CHOWN", "0644",
                                                           "/a:/b", "nofile,1,2", "kernel+initrd", "root"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)), max_leaves=10)


def loads_or_spec_error(text: str) -> None:
    """Loading gives a Spec or a SpecError naming the file; a loaded spec always generates bundles."""
    try:
        spec = load_spec_text(text, "fuzz.yml")
    except SpecError as exc:
        assert exc.where and exc.where.startswith("fuzz.yml"), exc
        assert exc.message
        return
    images = {entry.image: ImageInfo(entry.image, {}) for _, _, entry in spec.entries()}
    for bundle in generate_all(spec, images):
        json.dumps(bundle.config)
        json.dumps(bundle.runtime)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_any_text(text):
    loads_or_spec_error(text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(list(TOP_KEYS) + ["bogus"]), values, max_size=5))
def test_structured_documents(doc):
    loads_or_spec_error(yaml.safe_dump(doc))


entry = st.builds(lambda name, fields: {"name": name, "image": "x:1", **fields},
                  st.sampled_from(["a", "b"]), st.dictionaries(st.sampled_from(ENTRY_KEYS[2:]), values, max_size=3))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(entry, max_size=3), st.lists(entry, max_size=2))
def test_entries(onboot, services):
    loads_or_spec_error(yaml.safe_dump({"onboot": onboot, "services": services}))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="[]{}:-&*!|>'\"#,? \n\tab1", max_size=200))
def test_yaml_punctuation(text):
    loads_or_spec_error(text)
