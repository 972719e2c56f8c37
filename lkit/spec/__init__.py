"""LinuxKit specs: YAML with line marks -> validated, merged, typed `Spec`."""

from lkit.spec.loader import load_spec, load_spec_text
from lkit.spec.model import FileEntry, ImageEntry, Kernel, Spec, Volume, Where
from lkit.spec.yamlmarks import YamlNode, load_json_node, load_yaml, load_yaml_text

__all__ = ["FileEntry", "ImageEntry", "Kernel", "Spec", "Volume", "Where", "YamlNode", "load_json_node",
           "load_spec", "load_spec_text", "load_yaml", "load_yaml_text"]
