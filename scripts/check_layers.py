#!/usr/bin/env python3
"""Enforces the library's layering and that it prints nothing.

Reads the sparta_layer(<name> DEPS ... EXTERNAL ...) calls of the top
CMakeLists.txt (the single source of truth) and fails, naming file, line
and include, when a file in src/<layer>/ includes "<other>/..." for a
folder <other> that is neither the layer itself nor one of its
(transitive) DEPS. src/cli (the executable) may include every layer.

Also fails on a write to stdout/stderr outside src/cli (printf, puts,
std::cout, std::cerr, fprintf(stdout|stderr)): the library hands its
reports to the caller as data; snprintf into a buffer is fine.

Usage: check_layers.py SOURCE_DIR      (exit 1 and one line per violation)
       check_layers.py --self-test
"""
import re
import sys
from pathlib import Path

EXECUTABLE = "cli"  # may use every layer and print
SOURCE_SUFFIXES = {".h", ".hpp", ".cpp", ".cc"}

LAYER_CALL = re.compile(r"^\s*sparta_layer\(([^)]*)\)", re.MULTILINE)
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"/]+)/[^"]*"', re.MULTILINE)
PRINT = re.compile(r"std::cout|std::cerr|(?<![\w:])(?:std::)?(?:printf|puts)\s*\(|"
                   r"(?<![\w:])(?:std::)?f(?:printf|puts|putc|write)\s*\([^;]*\bstd(?:out|err)\b")


def parse_layers(cmake_text):
    """{layer: set of direct deps} from the sparta_layer(...) calls."""
    layers = {}
    for call in LAYER_CALL.finditer(re.sub(r"#[^\n]*", "", cmake_text)):
        words = call.group(1).split()
        if not words:
            continue
        name, deps, section = words[0], [], None
        for w in words[1:]:
            if w in ("DEPS", "EXTERNAL"):
                section = w
            elif section == "DEPS":
                deps.append(w)
        layers[name] = set(deps)
    return layers


def allowed_folders(layers):
    """{layer: itself plus every layer reachable through DEPS}."""
    allowed = {}
    for name in layers:
        seen, todo = {name}, [name]
        while todo:
            for dep in layers.get(todo.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        allowed[name] = seen
    return allowed


def strip_comments(text):
    """C++ text with // and /* */ comments and string literals blanked (lines kept)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == '"' and not re.search(r"#\s*include\s*$", text[max(0, i - 40):i].split("\n")[-1]):
            j = i + 1
            while j < n and text[j] != '"' and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append('""')
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def check_file(layer, rel_path, text, layers, allowed):
    """Violation lines for one file of src/<layer>/."""
    problems = []
    code = strip_comments(text)
    if layer != EXECUTABLE:
        for m in INCLUDE.finditer(code):
            folder = m.group(1)
            if folder in layers and folder not in allowed.get(layer, {layer}):
                line = code.count("\n", 0, m.start()) + 1
                target = m.group(0).split('"')[1]
                problems.append(f"{rel_path}:{line}: layer '{layer}' includes \"{target}\"; "
                                f"'{layer}' may use only {', '.join(sorted(allowed.get(layer, {layer})))} "
                                f"(sparta_layer in CMakeLists.txt)")
        for m in PRINT.finditer(code):
            line = code.count("\n", 0, m.start()) + 1
            problems.append(f"{rel_path}:{line}: prints ({m.group(0).strip()}...) outside src/{EXECUTABLE}; "
                            f"hand the text to the caller instead")
    return problems


def check_tree(root):
    root = Path(root)
    layers = parse_layers((root / "CMakeLists.txt").read_text())
    if not layers:
        return ["CMakeLists.txt: no sparta_layer(...) calls found"]
    allowed = allowed_folders(layers)
    problems = []
    for dep_layer, deps in sorted(layers.items()):
        for d in sorted(deps - set(layers)):
            problems.append(f"CMakeLists.txt: layer '{dep_layer}' depends on unknown layer '{d}'")
    for folder in sorted(p for p in (root / "src").iterdir() if p.is_dir()):
        if folder.name != EXECUTABLE and folder.name not in layers:
            problems.append(f"src/{folder.name}: folder is not a sparta_layer in CMakeLists.txt")
            continue
        for f in sorted(folder.rglob("*")):
            if f.suffix in SOURCE_SUFFIXES:
                problems += check_file(folder.name, f.relative_to(root), f.read_text(errors="replace"),
                                       layers, allowed)
    return problems


def self_test():
    layers = parse_layers("# sparta_layer(commented DEPS x)\n"
                          "sparta_layer(core EXTERNAL DNNL::dnnl)\nsparta_layer(ops DEPS core)\n"
                          "sparta_layer(nn DEPS ops EXTERNAL a::b)\n")
    assert layers == {"core": set(), "ops": {"core"}, "nn": {"ops"}}, layers
    allowed = allowed_folders(layers)
    assert allowed["nn"] == {"nn", "ops", "core"}, allowed
    ok = '#include "core/x.h"\n#include <cstdio>\nint f(char* b) { return std::snprintf(b, 4, "%d", 1); }\n'
    assert check_file("nn", "src/nn/a.cpp", ok, layers, allowed) == []
    # Upward include, printing, and the same in comments or strings (ignored).
    assert len(check_file("ops", "src/ops/a.cpp", '#include "nn/gpt.h"\n', layers, allowed)) == 1
    assert check_file("ops", "src/ops/a.cpp", '// #include "nn/gpt.h"\n', layers, allowed) == []
    for bad in ['std::printf("x");', 'std::fprintf(stderr, "x");', 'std::cerr << 1;', 'puts("x");',
                'fprintf(stdout, "%d", 1);', 'std::fputs(s, stderr);']:
        assert len(check_file("core", "src/core/a.cpp", bad, layers, allowed)) == 1, bad
    for fine in ['std::snprintf(b, 4, "x");', 'std::fprintf(out, "x");', 'const char* s = "printf(";',
                 '/* std::cout */']:
        assert check_file("core", "src/core/a.cpp", fine, layers, allowed) == [], fine
    assert check_file("cli", "src/cli/a.cpp", '#include "nn/gpt.h"\nstd::printf("x");', layers, allowed) == []
    print("check_layers self-test passed")


def main(argv):
    if argv[1:] == ["--self-test"]:
        self_test()
        return 0
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    problems = check_tree(argv[1])
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"check_layers: {len(problems)} violation(s)", file=sys.stderr)
        return 1
    print("check_layers: layering and no-print rule hold")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
