#!/usr/bin/env python3
"""Writes the hand-made seed inputs of the worker's fuzz corpora
(fuzz/corpus/{chat_template,tool_calls,forced_schema,schema_grammar}/seed-*), standard library only:

    python3 fuzz/make_worker_seeds.py

chat_template inputs are `template \\0 messages \\0 tools \\0 kwargs` (see
hub-worker/src/fuzzing.rs): every template of the golden fixtures over a few of the
fixture conversations, and hostile templates (endless loops, deep nesting, huge
padding, recursion). tool_calls inputs are `format_byte chunk_byte text`; forced_schema
inputs are `pick_byte tools_json`.
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def chat_templates():
    fixtures = os.path.join(ROOT, "hub-worker/tests/fixtures/chat_templates")
    with open(os.path.join(fixtures, "templates.json")) as f:
        templates = json.load(f)
    with open(os.path.join(fixtures, "conversations.json")) as f:
        conversations = json.load(f)
    for t in templates:
        with open(os.path.join(ROOT, t["path"])) as f:
            source = f.read()
        put("chat_template", t["name"], source)
        for c in conversations[:6]:
            messages = json.dumps(c["messages"])
            tools = json.dumps(c.get("tools", []))
            put("chat_template", f'{t["name"]}-{c["name"]}', "\0".join([source, messages, tools]))
    hostile = {
        "endless-loop": "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        "recursive-macro": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "deep-list": "{% set ns = namespace(x=[]) %}{% for i in range(20000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x | tojson }}",
        "deep-list-print": "{% set ns = namespace(x=[]) %}{% for i in range(20000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}",
        "center-huge": '{{ "a" | center(4000000000) }}{{ "b".center(4000000000) }}',
        "truncate-max": '{{ "hello world" * 10 | truncate(18446744073709551615) }}',
        "tojson-indent-huge": "{{ messages | tojson(indent=2000000000) }}",
        "string-repeat": '{{ "x" * 1000000000 }}',
        "string-doubling": '{% set ns = namespace(s="xx") %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}',
        "raise": '{{ raise_exception("no system messages") }}',
        "strftime": '{{ strftime_now("%Y-%m-%d %H:%M:%S %a %b %j %% %Q") }}',
        "python-methods": '{{ "a,b,,c".split(",") }}{{ " x ".strip() }}{{ "abc".rsplit("b", -1) }}{{ {"b": 1, "a": 2}.items() | list }}{{ "ab".title() }}',
        "wordcount": '{{ messages[0].content | wordcount }}{{ messages | length }}',
        "syntax-error": "{% for m in messages %}{{ m.content",
        "generation-tag": "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}",
        "deep-parens": "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
        "deep-blocks": "{% if true %}" * 3000 + "x" + "{% endif %}" * 3000,
    }
    for name, source in hostile.items():
        put("chat_template", "hostile-" + name, source)
    put("chat_template", "kwargs", "{{ enable_thinking }}{{ bos_token }}\0[]\0[]\0" + json.dumps({"enable_thinking": False, "bos_token": "B"}))
    put("chat_template", "bad-messages", "{{ messages }}\0[{\"role\": 1}, 3, null]\0{}")


def tool_calls():
    formats = {"hermes": 0, "llama3": 1, "mistral": 2, "gemma": 3, "none": 4}
    outputs = {
        "hermes": [
            'Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n</tool_call>',
            '<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": "b", "arguments": {"x": [1, {"y": null}]}}</tool_call>',
            '<tool_call>{"name": "a", "arguments": "{\\"k\\": 1}"}</tool_call>',
            '<tool_call>{"name": "a", "argu',
            '<tool_call>not json</tool_call> trailing',
        ],
        "llama3": [
            '{"name": "get_weather", "parameters": {"city": "Paris"}}',
            '<|python_tag|>{"name": "a", "parameters": {}}; {"name": "b", "parameters": {"z": 1}}',
            '[{"name": "a", "parameters": {}}, {"name": "b", "arguments": {}}]',
            'Plain answer {"name": "x"}',
            '  \n{"name": 3, "parameters": []}',
        ],
        "mistral": [
            '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]',
            '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]b[CALL_ID]abc123456[ARGS]{}',
            'text [TOOL_CALLS][{"name": "a"',
            '[TOOL_CALLS]name[ARGS]not json',
        ],
        "gemma": [
            '```tool_code\nget_weather(city="Paris", days=3)\n```',
            '```tool_code\na(x=1.5, y=None, z=True, w=[1, "two"], v={"k": \'q\\n\'})\nb()\n```',
            '```json\n{"name": "get_weather", "parameters": {"city": "Paris"}}\n```',
            '```json\n[{"name": "a", "arguments": {}}]\n```',
            '```tool_code\nf(1, 2)\n```',
            '```tool_code\nunclosed(x="',
            'Before ```json\n{"not": "a call"}\n``` after',
        ],
        "none": ['<tool_call>{"name": "f", "arguments": {}}</tool_call>'],
    }
    for fmt, texts in outputs.items():
        for i, text in enumerate(texts):
            for chunk in (0, 3):
                put("tool_calls", f"{fmt}-{i}-c{chunk + 1}", bytes([formats[fmt], chunk]) + text.encode())


def forced_schemas():
    tools = [
        [{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"]}}}],
        [{"type": "function", "function": {"name": "a"}}, {"name": "get_weather", "parameters": {"type": "object"}}],
        [{"type": "function", "function": {"name": "x\"y\\z\u00e9", "parameters": []}}],
        [{"function": 3}, {"function": {"name": 4}}, 5, "s"],
        {"not": "an array"},
    ]
    for i, t in enumerate(tools):
        for pick in (0, 1):
            put("forced_schema", f"{i}-{pick}", bytes([pick]) + json.dumps(t).encode())
    # Duplicate keys and escapes, as a client may send them.
    put("forced_schema", "dup-keys", b'\x00[{"function": {"name": "a", "name": "get_weather", "parameters": {"b": 1, "a": 2}}}]')


def schema_grammars():
    """Every schema of the converter's cases (146, valid and refused), as a client sends it."""
    with open(os.path.join(ROOT, "hub-worker/src/engine/generate/schema_grammar_cases.json")) as f:
        cases = json.load(f)
    for i, c in enumerate(cases):
        schema = c["schema"] if c.get("raw") else json.dumps(c["schema"], ensure_ascii=False)
        put("schema_grammar", f"{i:03d}", schema.encode())


chat_templates()
tool_calls()
forced_schemas()
schema_grammars()
