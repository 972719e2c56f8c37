"""LinuxKit specs: YAML with line marks -> validated, merged, typed `Spec`."""

from lkit.spec.loader import load_spec, load_spec_text
from lkit.spec.model import FileEntry, ImageEntry, Kernel, Spec, Volume, Where
from lkit.spec.yamlmarks import Node, load_json_node, load_yaml, load_yaml_text

__all__ = ["FileEntry", "ImageEntry", "Kernel", "Node", "Spec", "Volume", "Where", "load_json_node",
           "load_spec", "load_spec_text", "load_yaml", "load_yaml_text"]
