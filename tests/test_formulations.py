"""Every .tex fragment in formulations/ is complete: balanced environments and braces, no macro
of ours left undefined (checked without LaTeX)."""
import pathlib
import shutil
import subprocess
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
         "Gamma", "Lambda", "Omega", "Pi", "Phi", "Psi", "Theta", "Xi", "textbackslash", "notin", "ni", "to"}  # standard LaTeX only


def test_there_are_formulations():
    assert FILES


def check_fragment(text: str) -> None:
    """A fragment a document can \\input as it is: balanced environments and braces, no preamble,
    no macro definitions, and only standard LaTeX macros."""
    text = re.sub(r"(?<!\\)%.*", "", text)
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


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_fragment_is_complete(path):
    check_fragment(path.read_text())


def test_checker_catches_broken_fragments():
    for bad in ("\\begin{tabular}{l} x", "{ unbalanced", "\\mymacro{x}", "\\begin{a}\\end{b}",
                "\\newcommand{\\x}{1}"):
        with pytest.raises(AssertionError):
            check_fragment(bad)


GENERATED = sorted((ROOT.parent / "paper" / "generated").glob("*.tex"))


@pytest.mark.parametrize("path", GENERATED, ids=lambda p: p.name)
def test_committed_generated_fragment_is_complete(path):
    check_fragment(path.read_text())


def test_paper_inputs_and_figures_exist():
    """paper/main.tex only \\inputs and includes files that the repo has (formulations/ and the
    committed paper/generated/)."""
    paper = ROOT.parent / "paper"
    text = re.sub(r"(?<!\\)%.*", "", (paper / "main.tex").read_text())
    inputs = re.findall(r"\\input\{([^}]+)\}", text)
    assert {f"../formulations/{p.stem}" for p in FILES} <= set(inputs)
    for i in inputs:
        assert (paper / (i + ".tex")).exists(), i
    for g in re.findall(r"\\includegraphics(?:\[[^]]*\])?\{([^}]+)\}", text):
        assert (paper / "generated" / (g + ".png")).exists(), g


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="needs pdflatex (apt-get install texlive-latex-recommended)")
def test_paper_builds_with_pdflatex(tmp_path):
    """paper/main.tex compiles as committed (formulations/ and paper/generated/)."""
    paper = ROOT.parent / "paper"
    r = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", f"-output-directory={tmp_path}",
                        "main.tex"], cwd=paper, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:]
    assert (tmp_path / "main.pdf").stat().st_size > 10000
