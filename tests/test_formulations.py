"""Every .tex fragment in formulations/ is complete: balanced environments and braces, no macro
of ours left undefined (checked without LaTeX)."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "formulations"
FILES = sorted(ROOT.glob("*.tex"))
KNOWN = {"subsection", "paragraph", "begin", "end", "min", "sum", "in", "le", "lambda", "beta", "dots", "qquad",
         "quad", "mathrm", "text", "round", "texttt", "input", "_", "ldots", "cdot", "times", "mid", "max", "ge",
         "left", "right", "forall", "mathcal", "emph", "label", "ref", "cite", "alpha", "gamma", "delta", "sigma",
         "tau", "frac", "sqrt", "leq", "geq", "neq", "infty", "lceil", "rceil", "lfloor", "rfloor", "cup", "cap",
         "setminus", "subseteq", "emptyset", "hline", "textbf", "textit", "mathbb", "bar", "hat", "tilde", "prime",
         "Leftrightarrow", "Rightarrow", "big", "Big", "ell", "ne", "star", "beta", "epsilon", "zeta", "eta", "theta",
         "iota", "kappa", "mu", "nu", "xi", "pi", "rho", "upsilon", "phi", "chi", "psi", "omega", "Sigma", "Delta",
         "Gamma", "Lambda", "Omega", "Pi", "Phi", "Psi", "Theta", "Xi"}  # standard LaTeX only


def test_there_are_formulations():
    assert FILES


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_fragment_is_complete(path):
    text = re.sub(r"(?<!\\)%.*", "", path.read_text())
    stack = []
    for kind, env in re.findall(r"\\(begin|end)\{(\w+\*?)\}", text):
        if kind == "begin":
            stack.append(env)
        else:
            assert stack and stack.pop() == env, f"\\end{{{env}}} does not close the open environment"
    assert not stack, f"unclosed environments: {stack}"
    depth = 0
    for ch in re.sub(r"\\[{}]", "", text):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    assert "\\documentclass" not in text and "\\newcommand" not in text     # a fragment, macro-free
    macros = set(re.findall(r"\\([A-Za-z]+)", text))
    assert macros <= KNOWN, macros - KNOWN
