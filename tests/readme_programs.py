#!/usr/bin/env python3
"""Writes the README's programs as sources, so that the build compiles and runs them exactly as
printed (examples/CMakeLists.txt).

    readme_programs.py README OUT_DIR

Each ```cpp block that follows a line ending in (`readme.NAME`): becomes OUT_DIR/NAME.cpp (a file
is rewritten only when its content changes, so that an unchanged program is not rebuilt). Prints
the names, one per line.
"""
import os
import re
import sys


def main():
    readme, out_dir = sys.argv[1:3]
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    os.makedirs(out_dir, exist_ok=True)
    for name, code in re.findall(r"\(`readme\.([a-z_]+)`\):\n\n```cpp\n(.*?)\n```", text, re.S):
        path = os.path.join(out_dir, name + ".cpp")
        content = code + "\n"
        old = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if old != content:
            with open(path, "w", encoding="utf-8") as f:
                f.write(content)
        print(name)


if __name__ == "__main__":
    main()
