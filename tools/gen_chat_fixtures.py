#!/usr/bin/env python3
"""Makes tests/fixtures/chat/*.json: chat templates rendered by transformers' own Jinja machinery.

What it writes
  - <name>.json for every tests/fixtures/chat/<name>.jinja: the template rendered over several
    conversations (single turn, system + user, multi-turn, newlines/quotes/unicode, with and
    without add_generation_prompt) through transformers.utils.chat_template_utils.render_jinja_template,
    exactly as tokenizer.apply_chat_template renders (tools=None, documents=None, bos/eos tokens as
    kwargs). A template that raises (raise_exception) records {"error": message} instead.
    Today's date (strftime_now) is written as the placeholder <<TODAY:%d %b %Y>> so the fixture
    does not go stale; the C++ test substitutes its own strftime.
  - zephyr.jinja and smollm2.jinja themselves, read from ../shared/models/TinyLlama-1.1B-Chat-v1.0/
    tokenizer_config.json and models/SmolLM2-135M-Instruct.Q4_1.gguf (tokenizer.chat_template).
    The other .jinja files are hand-kept copies of the Hub templates (see chat_template.cpp); the
    C++ built-ins hold the same text, and test_chat_template checks that they do.
  - jinja_cases.json: small templates exercising the interpreter (filters, loops, whitespace
    control, tojson, errors), rendered by the same compiled environment with a JSON context.

Versions used: transformers 5.24.0, jinja2 3.1.6, gguf 0.23, Python 3.11.
Rerun: python3 tools/gen_chat_fixtures.py   (from the repository root; no network needed)
"""
import json
import os
import sys
from datetime import datetime

import jinja2
import transformers
from transformers.utils.chat_template_utils import _compile_jinja_template, render_jinja_template

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "chat")
SHARED = os.environ.get("LORA_SHARED", os.path.join(ROOT, "..", "shared"))
DATE_FMT = "%d %b %Y"
DATE_PLACEHOLDER = "<<TODAY:%d %b %Y>>"

# bos/eos as the families' tokenizer_config.json declare them (Qwen has no bos token: None there,
# "" here because our API carries strings; Qwen templates never read it).
TOKENS = {
    "zephyr": ("<s>", "</s>"),
    "smollm2": ("<|im_start|>", "<|im_end|>"),
    "chatml": ("<s>", "<|im_end|>"),
    "llama2": ("<s>", "</s>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama3.1": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama3.2": ("<|begin_of_text|>", "<|eot_id|>"),
    "mistral-v0.1": ("<s>", "</s>"),
    "mistral-v0.2": ("<s>", "</s>"),
    "mistral-v0.3": ("<s>", "</s>"),
    "qwen2": ("", "<|im_end|>"),
    "qwen2.5": ("", "<|im_end|>"),
}

SYS = {"role": "system", "content": "You are a helpful assistant."}
U1 = {"role": "user", "content": "Hello!"}
A1 = {"role": "assistant", "content": "Hi there. How can I help?"}
U2 = {"role": "user", "content": "Write a haiku about llamas."}
A2 = {"role": "assistant", "content": "Soft wool on the hills"}
TRICKY_U = {"role": "user", "content": "  Line one\nline \"two\" and 'three'\t\\n literal\n\nÉté — 日本語 🦙 \u00a0 "}
TRICKY_A = {"role": "assistant", "content": "\nSure: {{ not a tag }} {% nor this %} <s> </s>\n"}

CONVERSATIONS = {
    "single_user": [U1],
    "system_user": [SYS, U1],
    "multi_turn": [U1, A1, U2],
    "system_multi_turn": [SYS, U1, A1, U2, A2],
    "ends_with_assistant": [U1, A1],
    "tricky_content": [SYS, TRICKY_U, TRICKY_A, U2],
    "empty_content": [{"role": "user", "content": ""}],
    "not_alternating": [U1, U2],
    "assistant_first": [A1, U1],
    "system_in_middle": [U1, SYS, U2],
}


def render(template, messages, add_generation_prompt, bos, eos):
    rendered, _ = render_jinja_template(
        conversations=[messages],
        chat_template=template,
        add_generation_prompt=add_generation_prompt,
        bos_token=bos,
        eos_token=eos,
    )
    return rendered[0]


def write_json(name, obj):
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def extract_templates():
    tiny = os.path.join(SHARED, "models", "TinyLlama-1.1B-Chat-v1.0", "tokenizer_config.json")
    if os.path.exists(tiny):
        with open(tiny, encoding="utf-8") as f:
            tpl = json.load(f)["chat_template"]
        with open(os.path.join(OUT, "zephyr.jinja"), "w", encoding="utf-8") as f:
            f.write(tpl)
    gguf_path = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if os.path.exists(gguf_path):
        from gguf import GGUFReader
        field = GGUFReader(gguf_path).fields["tokenizer.chat_template"]
        tpl = bytes(field.parts[field.data[0]]).decode("utf-8")
        with open(os.path.join(OUT, "smollm2.jinja"), "w", encoding="utf-8") as f:
            f.write(tpl)


def gen_templates():
    today = datetime.now().strftime(DATE_FMT)
    for fname in sorted(os.listdir(OUT)):
        if not fname.endswith(".jinja"):
            continue
        name = fname[: -len(".jinja")]
        with open(os.path.join(OUT, fname), encoding="utf-8") as f:
            template = f.read()
        bos, eos = TOKENS[name]
        cases = []
        for conv_name, messages in CONVERSATIONS.items():
            for agp in (True, False):
                case = {"name": conv_name, "add_generation_prompt": agp, "messages": messages}
                try:
                    out = render(template, messages, agp, bos, eos)
                    if today in out:
                        out = out.replace(today, DATE_PLACEHOLDER)
                    case["expected"] = out
                except jinja2.exceptions.TemplateError as e:
                    case["error"] = str(e)
                cases.append(case)
        write_json(name + ".json", {"template": fname, "bos_token": bos, "eos_token": eos, "cases": cases})
        print(f"{name}: {sum('expected' in c for c in cases)} rendered, {sum('error' in c for c in cases)} errors")


# Interpreter cases: (template, context). Rendered with transformers' compiled environment.
JINJA_CASES = [
    ("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 2**3**2 }}", {}),
    ("{{ 1.5 + 1 }} {{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1e15 }} {{ 1e-5 }} {{ 0.0001 }} {{ 1_000 }} {{ 0x1F }} {{ 3.0 }} {{ -0.0 }} {{ 10 / 4 }} {{ 2.5e-3 }}", {}),
    ("{{ 'a' ~ 1 ~ none ~ true }} {{ 'ab' * 3 }} {{ [1, 2] + [3] }} {{ 'x' + 'y' }}", {}),
    ("{{ [1, 'a', none, true, 1.5, {'k': (1, 2)}, (3,), ()] }}", {}),
    ("{{ \"it's\" }} {{ ['it\\'s', \"q\\\"q\", 'b\\\\s', 'n\\nl', 'é'] }}", {}),
    ("{{ '\\x41\\u00e9\\t|\\d|\\101' }}", {}),
    ("{{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' == 'a' }} {{ [1, 2] == [1, 2] }} {{ (1, 2) == [1, 2] }} {{ {'a': 1} == {'a': 1} }} {{ none == none }} {{ 1 != 2 }}", {}),
    ("{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'abc' < 'abd' }} {{ [1, 2] < [1, 3] }} {{ 2 >= 2 }} {{ 'a' in 'cat' }} {{ 3 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'z' not in 'abc' }}", {}),
    ("{{ true and 'x' }}|{{ false or 'y' }}|{{ '' or none }}|{{ not 0 }}|{{ 0 and 1 }}|{{ 'a' if x else 'b' }}|{{ 'a' if true }}|", {"x": 0}),
    ("{{ x }}|{{ x is defined }}|{{ x is undefined }}|{{ y is none }}|{{ y is defined }}|{{ x|default('d') }}|{{ y|default('d') }}|{{ ''|default('e', true) }}|{{ x|length }}", {"y": None}),
    ("{% for m in msgs %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.first }}/{{ loop.last }}/{{ loop.length }}:{{ m }};{% endfor %}", {"msgs": ["a", "b", "c"]}),
    ("{% for m in [] %}x{% else %}empty{% endfor %}|{% for k, v in d.items() %}{{ k }}={{ v }},{% endfor %}|{% for c in 'héllo' %}{{ c }}.{% endfor %}|{% for k in d %}{{ k }}{% endfor %}", {"d": {"b": 1, "a": 2}}),
    ("{% for x in range(10) if x % 3 == 0 %}{{ x }}{{ ',' if not loop.last }}{% endfor %}|{% for x in range(5) %}{% if x == 1 %}{% continue %}{% endif %}{% if x == 3 %}{% break %}{% endif %}{{ x }}{% endfor %}|{{ range(2, 10, 3)|list }}", {}),
    ("{% for x in [1, 2] %}{{ loop.previtem }}-{{ loop.nextitem }}-{{ loop.cycle('o', 'e') }} {% endfor %}", {}),
    ("{% for a in [[1, 2], [3, 4]] %}{% for b in a %}{{ loop.index }}{{ b }}{% endfor %};{% endfor %}", {}),
    ("{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}|{% if true %}{% set y = 5 %}{% endif %}{{ y }}", {}),
    ("{% set ns = namespace(n=0, s='') %}{% for i in [1, 2, 3] %}{% set ns.n = ns.n + i %}{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }} {{ ns.s }}", {}),
    ("{% set a, b = 1, 2 %}{{ a }}{{ b }}|{% set t = (1, 'x') %}{{ t[1] }}|{% set blk %}in {{ a }} block{% endset %}{{ blk|upper }}", {}),
    ("{{ msgs[0] }} {{ msgs[-1] }} {{ msgs[1:] }} {{ msgs[::-1] }} {{ msgs[:1] }} {{ msgs[5] }} {{ 'héllo'[1:3] }} {{ 'abc'[::-1] }} {{ msgs[0:10:2] }}", {"msgs": ["a", "b", "c"]}),
    ("{{ m.role }} {{ m['content'] }} {{ m.missing }} {{ m.missing is defined }} {{ m.items()|list }} {{ m.keys()|list }} {{ m.get('role') }} {{ m.get('x', 'dflt') }} {{ m.values()|list }}", {"m": {"role": "user", "content": "hi"}}),
    ("{{ '  pad  '|trim }}|{{ 'xxhixx'|trim('x') }}|{{ 'Hello'|upper }}|{{ 'Hello'|lower }}|{{ 'hello world'|capitalize }}|{{ 'hello wORLD-foo (bar'|title }}|{{ 'a-b-c'|replace('-', '+') }}|{{ 'aaa'|replace('a', 'b', 2) }}", {}),
    ("{{ [3, 1, 2]|first }} {{ [3, 1, 2]|last }} {{ 'abc'|first }} {{ [3, 1, 2]|length }} {{ 'héllo'|length }} {{ {'a': 1}|length }} {{ [1, 2, 3]|join('-') }} {{ ['a', 'b']|join }} {{ [1, 2]|sum }} {{ [3, 1, 2]|sort }} {{ [3, 1, 2]|max }} {{ [3, 1, 2]|min }}", {}),
    ("{{ '42'|int }} {{ '4.7'|int }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ 3.9|int }} {{ '2.5'|float }} {{ 5|string }} {{ none|string }} {{ [1, 2]|string }} {{ 'ab'|list }} {{ {'k': 1}|items|list }} {{ 'x'|safe }} {{ -3|abs }} {{ 2.567|round(2) }} {{ 2.5|round }}", {}),
    ("{{ users|map(attribute='name')|join(', ') }}|{{ users|selectattr('admin')|map(attribute='name')|list }}|{{ users|rejectattr('admin')|map(attribute='name')|list }}|{{ users|selectattr('name', 'equalto', 'bo')|list|length }}|{{ ['a', 'B']|map('upper')|list }}|{{ [1, 2, 3, 4]|select('even')|list }}|{{ [1, 2, 3]|reject('equalto', 2)|list }}", {"users": [{"name": "al", "admin": True}, {"name": "bo", "admin": False}]}),
    ("{{ {'b': 1, 'a': 2}|dictsort }} {{ [1, 2, 1, 3]|unique|list }} {{ [1, 2, 3]|reverse|list }} {{ 'abc'|reverse }} {{ 'a\\nb'|indent(2) }} {{ 'a\\nb'|indent(2, true) }} {{ 'hi'|center(6) }}|{{ 'one two  three'|wordcount }} {{ '%s-%d'|format('a', 3) }}", {}),
    ("{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ 'é\"\\\\\\n\\t\\u0001'|tojson }}|{{ [1.0, 2.5, none, true, false]|tojson }}|{{ d|tojson(sort_keys=true) }}|{{ {}|tojson(indent=2) }}|{{ []|tojson }}", {"d": {"b": [1, {"x": "y"}], "a": None, "c": {}}}),
    ("{{ ' a b '.strip() }}|{{ 'xxaxx'.lstrip('x') }}|{{ 'xxaxx'.rstrip('x') }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'abc'.startswith('ab') }}|{{ 'abc'.endswith(('x', 'c')) }}|{{ 'ab'.upper() }}|{{ 'hello world'.title() }}|{{ 'aXa'.replace('a', 'b') }}|{{ 'a{}b{}'.format(1, 'x') }}|{{ 'abcb'.find('b') }}|{{ 'abcb'.count('b') }}|{{ '-'.join(['x', 'y']) }}", {}),
    ("{{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 'a' is string }} {{ 1 is number }} {{ 1.5 is float }} {{ 1 is integer }} {{ true is boolean }} {{ {} is mapping }} {{ [] is sequence }} {{ 'x' is iterable }} {{ 5 is iterable }} {{ none is none }} {{ 2 is equalto 2 }} {{ 'ab' is lower }} {{ 1 is in [1] }} {{ true is true }} {{ 1 is sameas 1 }} {{ 'x' is callable }} {{ 3 is gt 2 }} {{ 3 is not lt 2 }}", {}),
    ("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('al') }} {{ greet('bo', punct='?') }} {{ greet(name='cy') }}", {}),
    ("{% filter upper %}shout {{ x }}{% endfilter %}|{% with a = 3 %}{{ a }}{% endwith %}{{ a }}|{% raw %}{{ not parsed }}{% endraw %}|{% print 'p' %}", {"x": "it"}),
    ("  {% if true %}\n    yes\n  {% endif %}\n  {%- if true %} a {% endif -%}  \n  {{ 'b' }}  \n{# comment #}\n  {%+ if true %}keep{% endif %}\n{% if true +%}\nplus\n{% endif %}", {}),
    ("line1\n  {# lstripped comment #}\nline2 {{- ' tight' -}} \n  end\n{%- for i in [1, 2] %}\n    item {{ i }}\n{%- endfor %}\n", {}),
    ("a\r\nb\rc\n{{ 'x' }}\n", {}),
    ("{{ {'a': {'b': [1, {'c': 'deep'}]}}.a.b[1].c }} {{ [[1, 2], [3]][0][1] }} {{ x.y.z is defined }}", {"x": {"y": {}}}),
    ("{{ dict(a=1, b='x') }} {{ namespace(a=1).a }} {{ range(3)|list }} {{ [1, 2]|list|length }} {{ (1, 2)|list }}", {}),
    ("{{ 'ü'|tojson(ensure_ascii=true) }} {{ '🦙'|tojson(ensure_ascii=true) }} {{ [1, [2]]|tojson(indent='\t') }} {{ {'a': 1}|tojson(separators=(',', ':')) }} {{ 1e300 * 1e10 }}", {}),
    ("{{ '\u00a0x\u3000'|trim }}|{{ ' x '.strip() }}|{{ 'a\u2028b'.split() }}|{{ 'ÄÖ'|lower }}|{{ 'x' * 0 }}|{{ [0] * 3 }}|{{ 7 // -2 }}|{{ 7.5 // 2 }}|{{ -7.5 % 2 }}|{{ 2 ** -1 }}", {}),
    ("{{ none is sequence }} {{ {} is sequence }} {{ x is iterable }} {{ x is sequence }} {{ 'abc' is sequence }} {{ 1 is boolean }} {{ true is number }} {{ none is mapping }} {{ ns is mapping }}", {}),
    ("{{ '12 '|int }} {{ '0x1A'|int(0, 16) }} {{ '1_000'|int }} {{ true|int }} {{ none|int }} {{ '1e3'|int }} {{ '-4'|int }} {{ 'inf'|float }}|{{ 3|float }}", {}),
    ("{{ m['content'] if m['content'] is string else m['content']|tojson }}|{% for k, v in m|dictsort %}{{ k }}{% endfor %}|{{ m|length }}|{{ m.get('nope') }}|{{ m.content[0].text }}", {"m": {"role": "tool", "content": [{"type": "text", "text": "T"}]}}),
    ("{%- set ns = namespace(last=-1) %}{%- for m in msgs %}{%- if m.role == 'user' %}{%- set ns.last = loop.index0 %}{%- endif %}{%- endfor %}{{ ns.last }}|{{ msgs|map(attribute='role')|join(',') }}|{{ msgs|selectattr('role', 'eq', 'user')|list|length }}|{{ (msgs|last).content }}|{{ msgs[-1]['content'][:3] }}", {"msgs": [{"role": "user", "content": "one"}, {"role": "assistant", "content": "two"}, {"role": "user", "content": "three"}]}),
    ("{% for m in msgs %}{{ m }}{% endfor %}|{{ msgs }}|{{ msgs[0].items()|list }}", {"msgs": [{"role": "user", "content": "it's \"q\" \\ é\n"}]}),
    ("{% if a is defined and a %}A{% elif b %}B{% else %}C{% endif %}|{% if a %}{% elif b is not defined %}nb{% endif %}|{{ a or b or 'none' }}", {"b": 0}),
    ("{% for x in [3, 1, 2]|sort(reverse=true) %}{{ x }}{% endfor %}|{{ ['b', 'A', 'c']|sort }}|{{ ['b', 'A', 'c']|sort(case_sensitive=true) }}|{{ users|sort(attribute='age')|map(attribute='n')|join }}|{{ users|max(attribute='age') }}", {"users": [{"n": "x", "age": 30}, {"n": "y", "age": 20}]}),
    ("{%- macro render(m) -%}\n  [{{ m.role|upper }}] {{ m.content }}\n{%- endmacro -%}\n{%- for m in msgs %}\n{{ render(m) }}\n{%- endfor %}", {"msgs": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}),
    ("{{ x }}\n  {%- if true -%}\n    {{ y }}\n  {%- endif -%}\n  z  \n\t{% for i in [1] %}\t{{ i }}\n\t{% endfor %}\n", {"x": "X", "y": "Y"}),
    ("{{ 1e-7 }} {{ 123456789.123 }} {{ 1 / 3 }} {{ 2 / 3 * 3 }} {{ 1e22 }} {{ 5e-324 }} {{ 0.5e1 }} {{ 100.0 }} {{ 1.5e300 }} {{ -1.25 }} {{ 12345678901234567.0 }}", {}),
    ("a\n  {%- raw -%}\n  {{ x }} {% y %}\n  {%- endraw %}\nb{% raw %}{# c #}{% endraw %}", {}),
    ("{# a -#} x {#- b #}\n  {#+ c #}\ny{#- multi\nline -#}\n\nz", {}),
    ("\n  \n{% if true %}\n  first\n{% endif %}\n", {}),
    ("{% set x = [1, 2] %}{% set x = x + [3] %}{{ x }}{% set s = 'a' %}{% set s = s ~ 'b' %}{{ s }}{{ '%s and %d'|format('a', 2) }}{{ 'abc'|list|join(',') }}", {}),
    ("{% for o in [1, 2] %}{% set outer = loop %}{% for i in 'ab' %}{{ outer.index }}{{ loop.index }}{{ i }} {% endfor %}{% endfor %}", {}),
    ("{{ msgs|selectattr('role', 'in', ['user', 'system'])|map(attribute='content')|list }} {{ msgs|rejectattr('content', 'none')|list|length }} {{ msgs|map(attribute='missing', default='d')|list }}", {"msgs": [{"role": "user", "content": "u"}, {"role": "tool", "content": None}, {"role": "system", "content": "s"}]}),
    ("{{ (1, 2)[0] }} {{ [1, 2, 3][-1:] }} {{ 'hello'[-3:-1] }} {{ [1, 2, 3][1:2] }} {{ [1, 2, 3][5:] }} {{ 'abc'[10:] }}|{{ 'x'.join(['a', 'b']) }}|{{ 'a b'.split(' ') }}", {}),
    ("{{ x is string }}{{ x is defined }}{% if x %}T{% endif %}{{ x|default('dd', true) }}{{ x ~ 'e' }}", {"x": ""}),
    ("{{ d.items()|list|first }} {{ d|items|list|last }} {{ d.keys()|join(',') }} {{ 'a' in d }} {{ 'z' not in d }} {{ d['b'] }} {{ d.get('c', 0) + 1 }}", {"d": {"a": 1, "b": 2}}),
    ("{{ true + 1 }} {{ 3 * true }} {{ 1 == true }} {{ [] == [] }} {{ 'a' < 'b' }} {{ none is not none }} {{ 0.1 * 3 }} {{ 10 % 3.5 }} {{ -7 % 3.0 }}", {}),
    ("{{ strftime_now('%Y') | length }}", {}),
    ("{{ 'a' + 1 }}", {}),
    ("{{ x.y }}", {}),
    ("{{ none + 1 }}", {}),
    ("{{ raise_exception('custom failure') }}", {}),
    ("{% if x %}unterminated", {}),
    ("{{ 1 + }}", {}),
    ("{% frobnicate %}", {}),
    ("{{ x|nosuchfilter }}", {}),
    ("{% for %}{% endfor %}", {}),
    ("{{ 'abc' }", {}),
    ("{% endif %}", {}),
    ("{{ [1, 2 }}", {}),
    ("{# never closed", {}),
]

WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Get the weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}}, "required": ["city"]}}}
TOOL_CHAT = [
    {"role": "system", "content": "You can call tools."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "call12345", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "content": "{\"temp\": 21}", "tool_call_id": "call12345"},
    {"role": "assistant", "content": "It is 21°C."},
    {"role": "user", "content": "Thanks!"},
]
# (template file, extra context): rendered with tools and tool messages through the same environment.
TOOL_TEMPLATE_CASES = [
    ("llama3.1.jinja", {"tools": [WEATHER_TOOL], "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "add_generation_prompt": True}),
    ("llama3.1.jinja", {"tools": [WEATHER_TOOL], "tools_in_user_message": False, "date_string": "01 Jan 2025", "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "add_generation_prompt": False}),
    ("llama3.1.jinja", {"builtin_tools": ["brave_search", "code_interpreter"], "tools": None, "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "add_generation_prompt": True}),
    ("qwen2.5.jinja", {"tools": [WEATHER_TOOL], "bos_token": "", "eos_token": "<|im_end|>", "add_generation_prompt": True}),
    ("mistral-v0.3.jinja", {"tools": [WEATHER_TOOL], "bos_token": "<s>", "eos_token": "</s>", "add_generation_prompt": True}),
]


def gen_jinja_cases():
    out = []
    for template, ctx in JINJA_CASES:
        case = {"template": template, "context": ctx}
        try:
            case["expected"] = _compile_jinja_template(template).render(**ctx)
        except jinja2.exceptions.TemplateSyntaxError as e:
            case["syntax_error"] = e.message
            case["line"] = e.lineno
        except Exception as e:  # runtime errors: TemplateError, TypeError, UndefinedError
            case["error"] = f"{type(e).__name__}: {e}"
        out.append(case)
    for fname, ctx in TOOL_TEMPLATE_CASES:
        with open(os.path.join(OUT, fname), encoding="utf-8") as f:
            template = f.read()
        ctx = dict(ctx, messages=TOOL_CHAT)
        case = {"template_file": fname, "context": ctx}
        try:
            case["expected"] = _compile_jinja_template(template).render(**ctx)
        except Exception as e:
            case["error"] = f"{type(e).__name__}: {e}"
        out.append(case)
    write_json("jinja_cases.json", {"cases": out})
    print(f"jinja_cases: {len(out)} cases")


def main():
    print(f"transformers {transformers.__version__}, jinja2 {jinja2.__version__}", file=sys.stderr)
    extract_templates()
    gen_templates()
    gen_jinja_cases()


if __name__ == "__main__":
    main()
