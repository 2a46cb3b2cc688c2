"""Reading recipe YAML with YAML 1.2's booleans (a recipe's ``amp: off`` stays the string)."""

from __future__ import annotations

import re

import yaml

# libyaml's parser where PyYAML was built with it (3x faster than the pure-Python one; the
# constructor and the resolvers below stay PyYAML's own, so the values are the same)
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 also reads on/off/yes/no as booleans,
    which would turn ``amp: off`` into False."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse_yaml(text: str):
    return yaml.load(text, Loader=_Loader)
