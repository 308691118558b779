#!/usr/bin/env python3
"""The consumers.newcomer test: does what the README's section "Use it in your CMake project"
says, literally and nothing more, so that the README cannot drift away from what works.

    newcomer.py README SOURCE_DIR WORK_DIR

The section is read in order. A ```sh block is commands, run by bash with -euo pipefail in
WORK_DIR. Another code block that follows a line ending in "`PATH`:" is the content of that
file, written to WORK_DIR/PATH. Any other block is an error, so the section stays a recipe that can be
followed as written. The reader's situation is all that is set up: WORK_DIR/batchwise is their
checkout (a link to SOURCE_DIR) and HOME is WORK_DIR/home, so that "$HOME/.local" is a fresh
prefix and nothing outside WORK_DIR is touched.
"""
import os
import re
import shutil
import subprocess
import sys

SECTION = "## Use it in your CMake project"


def steps(readme_text):
    """Yields ("file", path, text) and ("sh", None, text) in the order the section gives them."""
    lines = readme_text.splitlines()
    try:
        start = lines.index(SECTION)
    except ValueError:
        sys.exit(f"newcomer.py: the README has no line '{SECTION}'")
    previous = ""
    i = start + 1
    while i < len(lines) and not lines[i].startswith("## "):
        line = lines[i]
        fence = re.match(r"^(```+)\s*(\S*)", line)
        if not fence:
            if line.strip():
                previous = line
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end].strip() != fence.group(1):
            end += 1
        body = "\n".join(lines[i + 1:end]) + "\n"
        named = re.search(r"`([^`]+)`:\s*$", previous)
        if fence.group(2) == "sh":
            yield "sh", None, body
        elif named:
            yield "file", named.group(1), body
        else:
            sys.exit(f"newcomer.py: README line {i + 1}: a ```{fence.group(2)} block that is "
                     "neither a file (after a line ending in `path`:) nor ```sh commands")
        previous = ""
        i = end + 1


def main():
    readme, source_dir, work = sys.argv[1:4]
    with open(readme, encoding="utf-8") as f:
        found = list(steps(f.read()))
    if not any(kind == "sh" for kind, _, _ in found) or not any(kind == "file" for kind, _, _ in found):
        sys.exit("newcomer.py: the README section has no commands or no files")

    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "home"))
    os.symlink(os.path.abspath(source_dir), os.path.join(work, "batchwise"))
    env = dict(os.environ, HOME=os.path.join(work, "home"))

    for kind, path, text in found:
        if kind == "file":
            print(f"newcomer: writing {path}", flush=True)
            target = os.path.join(work, path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "w", encoding="utf-8") as f:
                f.write(text)
        else:
            for command in text.strip().splitlines():
                print(f"newcomer: $ {command}", flush=True)
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", text], cwd=work, env=env)
            if result.returncode != 0:
                sys.exit(f"newcomer: the README's commands failed (exit status {result.returncode})")
    print(f"newcomer: all {len(found)} steps of the README's '{SECTION[3:]}' passed")


if __name__ == "__main__":
    main()
