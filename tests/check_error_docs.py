#!/usr/bin/env python3
"""Checks that the error messages quoted in docs/errors.md are the ones the code throws.

    python3 tests/check_error_docs.py [ROOT] [-v]

ROOT is the repository root (default: the parent of this script's folder); the working directory
does not matter. Standard library only; reads docs/errors.md and include/batchwise/**/*.hpp.

Quotes of docs/errors.md taken as messages: every double-quoted text of prose of MIN_FRAGMENT
characters or more (but NOT_MESSAGES), and every double-quoted text or `code span` that starts
like a message: a call prefix such as "fit:", "load_weights:", "Dataset::prefetch:",
"batchwise::Model<Net, ...>:", or "..." continuing a message. A quote is split on "..." (a value
or an elided part; so are the placeholders '<name>', <its message>, X.Y and XY), and each
fragment of at least MIN_FRAGMENT characters must be spelled by the message texts of
include/batchwise.

A message text is what one C++ expression can evaluate to as far as its string literals show:
adjacent literals join ("a" "b" is "ab"), literals joined by + or << follow each other, a ternary
gives both branches, std::string("x") is "x", and anything else between two literals
(`std::to_string(n)`, `in_quotes(path)`, an argument such as the call's name) is a run-time value.
In a quote, a value is a value-like text (a number, a file or name in quotes, a shape in
parentheses, a bare name, or a comma-separated list of such, never prose), or the whole text of
another message (what a helper such as fail_at(path, offset, what) is given); a bare name must be
a whole literal of the code ("fit", "inputs", "sparse_categorical_crossentropy"). The call prefix
of a quote must be spelled by a literal. Names in quotes and file names are not checked.

Prints each quote with the fragments that no code spells, and exits 1 if there is any; -v also
prints each fragment with the message text that spells it, and the header holding it.
"""
import difflib
import functools
import os
import re
import sys

MIN_FRAGMENT = 12
# Longest text one run-time value in a quote may be.
MAX_VALUE = 64

# Quotes that this heuristic cannot match although they are the code's messages: the quote's
# text -> why. Keep it empty if possible.
EXEMPT = {}

WILD = "\0"  # a run-time value between two literals

# A code span that reads as a message: a call prefix (an identifier, possibly qualified with ::,
# with template arguments) and a colon, or "..." continuing a message quoted before it. (Every
# double-quoted text of MIN_FRAGMENT characters or more is taken as a message, but these.)
MESSAGE_START = re.compile(r"^(?:[A-Za-z_][\w:]*(?:<[^>]*>)?:|\.\.\.)")

# Double-quoted texts of docs/errors.md that are not batchwise's messages: the text -> what it is.
NOT_MESSAGES = {
    "anything batchwise refused": "the introduction's words, what catching batchwise::error means",
    "constraints not satisfied": "the compiler's own diagnostic for a policy that is not one",
}


# --- C++ side ---------------------------------------------------------------------------------

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'", "?": "?",
            "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


def _unescape(body):
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        n = body[i + 1]
        if n in "01234567":
            m = re.match(r"[0-7]{1,3}", body[i + 1:])
            out.append(chr(int(m.group(0), 8)))
            i += 1 + len(m.group(0))
        elif n == "x":
            m = re.match(r"[0-9A-Fa-f]+", body[i + 2:])
            out.append(chr(int(m.group(0), 16)))
            i += 2 + len(m.group(0))
        else:
            out.append(_ESCAPES.get(n, n))
            i += 2
    return "".join(out)


def literals(src):
    """Yields (start, end, text) of each string literal of C++ source `src`, skipping comments
    and character literals."""
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif c == "'":
            # a character literal, or a digit separator (1'000) which the loop below steps over
            if i > 0 and src[i - 1].isalnum() and not re.match(r"(u8|[uUL])$", src[max(0, i - 2):i]):
                i += 1
                continue
            j = i + 1
            while j < n and src[j] != "'":
                j += 2 if src[j] == "\\" else 1
            i = j + 1
        elif c == '"':
            m = re.match(r'R"([^()\\\s]{0,16})\(', src[i - 1:i + 20]) if i > 0 and src[i - 1] == "R" else None
            if m:
                close = ")" + m.group(1) + '"'
                body_start = i - 1 + m.end()
                j = src.find(close, body_start)
                yield i, j + len(close), src[body_start:j]
                i = j + len(close)
                continue
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            yield i, j + 1, _unescape(src[i + 1:j])
            i = j + 1
        else:
            i += 1


_OPS = ["<<=", ">>=", "::", "<<", "+=", "-=", "==", "!=", "<=", ">=", "&&", "||", "->", "++", "--"]


def tokens(src):
    """The tokens of C++ source `src`: ("lit", text) for each string literal (with its text),
    ("op", x) for brackets and operators, ("code", x) for identifiers, numbers, character
    literals and the rest. Comments and preprocessor lines are skipped."""
    lits = {start: (end, text) for start, end, text in literals(src)}
    out, i, n = [], 0, len(src)
    line_start = True
    while i < n:
        c = src[i]
        if i in lits:
            end, text = lits[i]
            if out and out[-1][0] == "code" and re.fullmatch(r"u8|[uULR]|u8R|[uUL]R", out[-1][1]):
                out.pop()  # an encoding or raw prefix
            out.append(("lit", text))
            i, line_start = end, False
        elif c == "\n":
            i, line_start = i + 1, True
        elif c.isspace():
            i += 1
        elif src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif c == "#" and line_start:
            while True:  # a preprocessor line, with its continuations
                j = src.find("\n", i)
                if j < 0:
                    i = n
                    break
                i = j + 1
                if src[j - 1] != "\\":
                    break
        elif c == "'" and not (i > 0 and src[i - 1].isalnum()):
            j = i + 1
            while j < n and src[j] != "'":
                j += 2 if src[j] == "\\" else 1
            out.append(("code", src[i:j + 1]))
            i, line_start = j + 1, False
        elif c.isalnum() or c == "_" or c == "'":
            m = re.compile(r"[\w.']+").match(src, i)
            out.append(("code", m.group(0)))
            i, line_start = m.end(), False
        else:
            op = next((o for o in _OPS if src.startswith(o, i)), c)
            out.append(("op", op))
            i, line_start = i + len(op), False
    return out


def nest(toks):
    """Tokens as a tree: each bracket pair becomes ("group", opener, [items])."""
    stack = [[]]
    openers = []
    for tok in toks:
        if tok[0] == "op" and tok[1] in "([{" and len(tok[1]) == 1:
            openers.append(tok[1])
            stack.append([])
        elif tok[0] == "op" and tok[1] in ")]}" and len(tok[1]) == 1 and openers:
            items = stack.pop()
            stack[-1].append(("group", openers.pop(), items))
        else:
            stack[-1].append(tok)
    while openers:  # unbalanced: close what is open
        items = stack.pop()
        stack[-1].append(("group", openers.pop(), items))
    return stack[0]


# Where one expression ends and another begins, at one nesting level.
_SEPARATORS = {",", ";", "=", "+=", "-=", "==", "!=", "&&", "||", "<=", ">="}
_KEYWORDS = {"return", "throw", "case", "co_return", "if", "else", "while", "for", "switch", "do"}
_MAX_VARIANTS = 64


def _split(items, is_sep):
    parts, cur = [], []
    for it in items:
        if is_sep(it):
            parts.append(cur)
            cur = []
        else:
            cur.append(it)
    parts.append(cur)
    return parts


def _expressions(items, separators=_SEPARATORS):
    """The expressions of one nesting level: split at separators, keywords and braced blocks."""
    def sep(it):
        return ((it[0] == "op" and it[1] in separators) or (it[0] == "code" and it[1] in _KEYWORDS)
                or (it[0] == "group" and it[1] == "{"))
    return [e for e in _split(items, sep) if e]


def _join(a, b):
    return a + b  # two WILDs in a row stay two: a value may be followed by a passed-on text


def _variants(expr):
    """The texts expression `expr` (items of one level) can evaluate to, as far as its string
    literals show: literals joined by + or <<, WILD for anything computed, a ternary's branches
    as alternatives."""
    # A ternary: cond ? a : b (the first ? and its matching :).
    depth, q = 0, None
    for k, it in enumerate(expr):
        if it == ("op", "?"):
            if q is None:
                q = k
            depth += 1
        elif it == ("op", ":") and q is not None:
            depth -= 1
            if depth == 0:
                return _cap(_variants(expr[q + 1:k]) + _variants(expr[k + 1:]))
    terms = _split(expr, lambda it: it[0] == "op" and it[1] in ("+", "<<"))
    out = [""]
    for term in terms:
        if not term:
            continue  # unary +
        vs = _term(term)
        if len(out) * len(vs) > _MAX_VARIANTS:
            vs = [WILD]
        out = list(dict.fromkeys(_join(a, b) for a in out for b in vs))
    return out


def _cap(vs):
    vs = list(dict.fromkeys(vs))
    return vs if len(vs) <= _MAX_VARIANTS else [WILD]


def _term(term):
    if all(it[0] == "lit" for it in term):
        return ["".join(it[1] for it in term)]
    if len(term) == 1 and term[0][0] == "group" and term[0][1] == "(":
        exprs = _expressions(term[0][2], {",", ";"})
        return _variants(exprs[0]) if len(exprs) == 1 else [WILD]
    # std::string("text"), std::string(), std::string_view(...): the text itself
    names = "".join(it[1] for it in term[:-1] if it[0] != "group")
    if term[-1][0] == "group" and term[-1][1] == "(" and names in ("std::string", "string", "std::string_view"):
        exprs = _expressions(term[-1][2], {",", ";"})
        if not exprs:
            return [""]
        return _variants(exprs[0]) if len(exprs) == 1 else [WILD]
    return [WILD]


def chains(src):
    """The message texts of C++ source `src`: for every expression at every nesting level, the
    texts it can evaluate to (see _variants), where they hold some literal text."""
    found = []

    def visit(items):
        for expr in _expressions(items):
            for v in _variants(expr):
                if v.replace(WILD, ""):
                    found.append(v)
        for it in items:
            if it[0] == "group":
                visit(it[2])

    visit(nest(tokens(src)))
    return list(dict.fromkeys(found))


# --- matching ---------------------------------------------------------------------------------

# A run-time value: a number, a name or path, a quoted name, a shape or list in brackets, or a
# comma-separated list of such; spaces only after commas, so that a value is never prose.
_ATOM = r"""(?: "[^"\s]*" | '[^'\s]*' | [(\[] [^()\[\]\s]* (?:,\ [^()\[\]\s]*)* [)\]] | <[^<>\s]*> | [^\s"'()\[\]] )"""
_VALUE = re.compile(rf"{_ATOM}+ (?: ,\ {_ATOM}+ )*", re.X)


def _value_like(text):
    return len(text) <= MAX_VALUE and (text == "" or _VALUE.fullmatch(text) is not None)


_WORDS = re.compile(r"[A-Za-z_][\w:]*(?:, [A-Za-z_][\w:]*)*")
# Words a value may be although no literal spells them.
_COMPUTED_WORDS = {"nan", "inf"}


class Matcher:
    """Whether a fragment of a quote is spelled by the chains (message texts) of the code. A
    WILD of a chain is filled by a value-like text, or by the whole text of another chain (a
    message passed on to a helper that adds its own text around it)."""

    def __init__(self, all_chains):
        self.chains = all_chains  # [(header, chain)]
        # A value that is a bare name (a call, a loss, an optimizer, a list of metrics) comes
        # from the code's own literals: each of its words must be a whole literal ("fit",
        # "sparse_categorical_crossentropy"), not a word inside a longer one.
        self.words = set(_COMPUTED_WORDS) | {chain for _, chain in all_chains if _WORDS.fullmatch(chain)}
        self.index = {}
        # Chains without a piece long enough to be indexed, tried with every fragment that holds
        # their pieces; not those of less than two visible characters (" ", ", "), which would
        # let any two words pass for two values.
        self.short = []
        for k, (_, chain) in enumerate(all_chains):
            pieces = chain.split(WILD)
            for piece in pieces:
                for g in _grams(piece):
                    self.index.setdefault(g, set()).add(k)
            if all(len(p) < 6 for p in pieces) and len("".join(pieces).replace(" ", "")) >= 2:
                self.short.append((k, [p for p in pieces if p]))

    @functools.lru_cache(maxsize=None)
    def _value(self, text):
        if not _value_like(text):
            return False
        if _WORDS.fullmatch(text):
            return all(w in self.words for w in text.split(", "))
        return True

    @functools.lru_cache(maxsize=None)
    def _head(self, text):  # the start of a value, where the quote breaks off
        return any(self._value(text + q) for q in ("", '"', "'", ")"))

    @functools.lru_cache(maxsize=None)
    def _tails(self, fragment, j):  # where a value's end that the fragment starts with ends
        # (not at the fragment's end: a fragment must show some of the code's own text)
        return [j + t for t in range(0, min(len(fragment) - j - 1, MAX_VALUE) + 1)
                if any(self._value(q + fragment[j:j + t]) for q in ("", '"', "'"))]

    def find(self, fragment):
        """[(header, chain)] of the chain that spells `fragment` (two: a text passed on, then the
        chain it is passed to), or None."""
        self.f = fragment
        self.m = len(fragment)
        cand = set()
        for g in _grams(fragment):
            cand |= self.index.get(g, set())
        cand |= {k for k, pieces in self.short if all(p in fragment for p in pieces)}
        self.cand = sorted(cand)
        self.fill_memo = {}

        def shown(k):  # how much of the fragment the chain's own text shows
            return sum(b.size for b in difflib.SequenceMatcher(None, self.chains[k][1], fragment,
                                                               autojunk=False).get_matching_blocks())

        found = [k for k in self.cand if any(e == self.m for e, _ in self._ends(self.chains[k][1], 0, "anywhere", 0))]
        if found:
            return [self.chains[max(found, key=shown)]]
        # The fragment starts within a text passed on (`fail_at(path, "expected ...")`) and goes
        # on in the chain it is passed to.
        for k in self.cand:
            for end, complete in self._ends(self.chains[k][1], 0, "literal", 0):
                if complete and 0 < end < self.m:
                    for k2 in self.cand:
                        if any(e == self.m for e, _ in self._ends(self.chains[k2][1], end, "after_wild", 0)):
                            return [self.chains[k], self.chains[k2]]
        return None

    def _fills(self, j, depth):
        """Where a whole chain spelled from fragment position j ends: {k}, and whether one
        reaches the fragment's end before its own."""
        key = (j, depth)
        if key not in self.fill_memo:
            ends, partial = set(), False
            for k in self.cand:
                chain = self.chains[k][1]
                # A text passed on: it starts with its own text, and has some.
                if chain[0] != self.f[j] or len(re.sub(r"[\0 ]", "", chain)) < 2:
                    continue
                for end, complete in self._ends(chain, j, "start", depth + 1):
                    if complete:
                        ends.add(end)
                    if end == self.m:
                        partial = True
            self.fill_memo[key] = (ends, partial)
        return self.fill_memo[key]

    def _ends(self, chain, j, mode, depth):
        f, m = self.f, self.m
        todo = []
        if mode == "start":
            todo.append((0, j))
        else:
            for i, c in enumerate(chain):
                if c == WILD:
                    if mode == "after_wild":
                        todo.append((i + 1, j))
                    elif mode == "anywhere":  # the fragment starts within this value
                        todo += [(i + 1, k) for k in self._tails(f, j)]
                elif mode in ("anywhere", "literal") and c == f[j]:
                    todo.append((i, j))
        seen, out = set(), set()
        while todo:
            i, jj = todo.pop()
            if (i, jj) in seen:
                continue
            seen.add((i, jj))
            if jj == m:
                out.add((m, i == len(chain)))
                continue
            if i == len(chain):
                out.add((jj, True))
                continue
            if chain[i] == WILD:
                for t in range(0, min(m - jj, MAX_VALUE) + 1):
                    text = f[jj:jj + t]
                    if (self._head(text) if jj + t == m else self._value(text)):
                        todo.append((i + 1, jj + t))
                if depth < 2:
                    ends, partial = self._fills(jj, depth)
                    todo += [(i + 1, k) for k in ends]
                    if partial:
                        out.add((m, False))
            elif chain[i] == f[jj]:
                todo.append((i + 1, jj + 1))
        return out


def _grams(text, n=6):
    return {text[k:k + n] for k in range(len(text) - n + 1)}


# --- docs side --------------------------------------------------------------------------------

def quotes(markdown):
    """The message quotes of `markdown`, whitespace collapsed: code spans that start like a
    message, then double-quoted prose (outside code spans) that does. Fenced code is skipped;
    spans and quotes are paired within a paragraph or a table row."""
    found = []
    markdown = re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)
    spans = re.compile(r"`([^`]+)`")
    for block in re.split(r"\n\s*\n|\n(?=\|)", markdown):
        for m in spans.finditer(block):
            text = " ".join(m.group(1).split())
            if MESSAGE_START.match(text) and ('"' in text or " " in text):
                found.append(text)
        prose = spans.sub(lambda m: " " * len(m.group(0)), block)
        for m in re.finditer(r'"([^"]+)"', prose):
            text = " ".join(m.group(1).split())
            if (MESSAGE_START.match(text) or len(text) >= MIN_FRAGMENT) and text not in NOT_MESSAGES:
                found.append(text)
    return found


def fragments(quote):
    # Placeholders stand for values just as ... does: '<name>', <its message>, CUDA X.Y, sm_XY
    # (not template parameters: Dense<units>).
    quote = re.sub(r"(?<![\w>])<[a-z ]+>|(?<![A-Za-z0-9])X\.?Y(?![A-Za-z0-9])", "...", quote)
    return [f for f in quote.split("...") if len(f.strip()) >= MIN_FRAGMENT]


def main(argv):
    verbose = "-v" in argv
    args = [a for a in argv if a != "-v"]
    root = args[0] if args else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    doc_path = os.path.join(root, "docs", "errors.md")
    include = os.path.join(root, "include", "batchwise")

    all_chains = []  # (header, chain)
    for dirpath, dirs, files in os.walk(include):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".hpp"):
                path = os.path.join(dirpath, name)
                with open(path, encoding="utf-8") as f:
                    for chain in chains(f.read()):
                        all_chains.append((os.path.relpath(path, root), chain))
    matcher = Matcher(all_chains)
    literal_text = "\n".join(piece for _, chain in all_chains for piece in chain.split(WILD))

    with open(doc_path, encoding="utf-8") as f:
        doc_quotes = quotes(f.read())

    failed = 0
    for quote in doc_quotes:
        if quote in EXEMPT:
            continue
        missing = []
        # The call that refused is often an argument (`std::string(call) + ": ..."`), which a
        # value could fill with anything: its name must be a literal of the code.
        call = re.match(r"([A-Za-z_]\w*(?:::\w+)*)(?:<[^>]*>)?:(?!:)", quote)
        if call and not re.search(r"(?<![\w:])" + re.escape(call.group(1)) + r"(?!\w)", literal_text):
            missing.append(call.group(1) + ":")
        for fragment in fragments(quote):
            where = matcher.find(fragment)
            if not where:
                missing.append(fragment)
            elif verbose:
                print(f"ok   {fragment!r}")
                for header, chain in where:
                    print(f"  <- {header}: {chain.replace(WILD, '{}')!r}")
        if missing:
            failed += 1
            print(f"not in the code: \"{quote}\"")
            for fragment in missing:
                print(f"    fragment: {fragment!r}")
    unused = [q for q in EXEMPT if q not in doc_quotes]
    for q in unused:
        print(f"EXEMPT quote no longer in docs/errors.md: \"{q}\"")
    with open(doc_path, encoding="utf-8") as f:
        prose = " ".join(f.read().split())
    for q in NOT_MESSAGES:
        if f'"{q}"' not in prose:
            print(f"NOT_MESSAGES text no longer in docs/errors.md: \"{q}\"")
            unused.append(q)
    print(f"{len(doc_quotes)} quotes checked, {failed} not in the code, {len(EXEMPT)} exempt")
    return 1 if failed or unused else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
