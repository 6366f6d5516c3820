"""A tool written in Python: counts the words of a text.

Built with componentize-py against world converge-tool. `--stub-wasi` replaces the WASI imports the CPython
runtime would otherwise bring (and call: it reads the environment at every call) with trapping stubs, so the
component imports only `converge:agent/*` and validation finds nothing to review. See scripts/polyglot-tools.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types


class Tool(exports.Tool):
    def info(self) -> types.ToolInfo:
        return types.ToolInfo(name="py-wordcount", description="Counts the words of a text, and the distinct ones.")

    def invoke(self, input: str) -> str:
        words = input.split()
        if not words:
            raise Err("no words in the input")
        distinct = {w.lower() for w in words}
        return json.dumps({"distinct": len(distinct), "words": len(words)}, sort_keys=True)
