"""Guards that keep the book consistent: notebooks <-> table of contents, clean notebook sources, the README's
commands are the ones CI runs, and the environment pins stay as the toolchain requires."""

import json
import re
from pathlib import Path

import pytest
import yaml

from facelab import REPO_ROOT, book, sitecheck

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


def toc_files():
    return [p[: -len(".html")] for p in sitecheck.toc_pages()]


def test_every_notebook_is_in_the_toc_and_vice_versa():
    chapters_in_toc = {f.split("/")[-1] for f in toc_files() if f.startswith("book/chapters/")}
    notebooks = {p.stem for p in NOTEBOOKS}
    assert notebooks - chapters_in_toc == set(), "notebooks missing from _toc.yml (add book/chapters/<stem>)"
    assert chapters_in_toc - notebooks == set(), "_toc.yml lists chapters that have no notebooks/<stem>.ipynb"


def test_toc_pages_exist_and_parts_are_not_empty():
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text())
    for part in toc["parts"]:
        assert part.get("chapters"), f"part {part.get('caption')!r} is empty"
    for f in toc_files():
        if not f.startswith("book/chapters/"):
            assert (REPO_ROOT / f"{f}.md").exists() or (REPO_ROOT / f"{f}.ipynb").exists(), f


def test_notebook_names_follow_the_convention():
    assert NOTEBOOKS, "the book has no chapters"
    for p in NOTEBOOKS:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+", p.stem), f"{p.name}: name chapters NN_slug.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_sources_are_clean_and_parameterised(path):
    raw = json.loads(path.read_text())
    for cell in raw["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{path.name} is committed with outputs"
            assert cell.get("execution_count") is None, f"{path.name} is committed with execution counts"
    assert raw["metadata"]["kernelspec"]["name"] == "python3", f"{path.name}: kernel must be 'python3'"
    nb = book.check_notebook(path)
    params = nb.cells[book.parameters_cell_index(nb)].source
    assert re.search(r'^PROFILE\s*=\s*"quick"', params, re.M), f"{path.name}: default PROFILE must be \"quick\""
    assert re.search(r'^DEVICE\s*=\s*"auto"', params, re.M), f"{path.name}: default DEVICE must be \"auto\""
    assert re.search(r"^SEED\s*=\s*\d+", params, re.M)
    first_code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in first_code[0].metadata.get("tags", []), f"{path.name}: parameters must be the first code cell"
    assert "runtime.setup(PROFILE, DEVICE, SEED" in "".join(c.source for c in first_code[1:3]), \
        f"{path.name}: call P = runtime.setup(PROFILE, DEVICE, SEED) right after the parameters"


def readme_commands():
    text = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [line.strip() for b in blocks for line in b.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    cmds = readme_commands()
    assert cmds[:2] == ["make book", "make test"], cmds
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    ci_cmds = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert cmds[1] in ci_cmds, ".ci/run must call the README's test command"


def test_makefile_targets_set_themselves_up():
    mk = (REPO_ROOT / "Makefile").read_text()
    for target in ("book", "test", "chapters", "unit", "html", "browser-check"):
        assert re.search(rf"^{re.escape(target)}:", mk, re.M), target
    assert re.search(r"^setup: \$\(STAMP\)", mk, re.M)
    assert re.search(r"^chapters: setup", mk, re.M) and re.search(r"^unit: setup", mk, re.M)


def test_environment_pins():
    req = (REPO_ROOT / "requirements.txt").read_text()
    lines = [ln.split("#")[0].strip() for ln in req.splitlines() if ln.split("#")[0].strip()]
    assert "torch==2.13.0" in lines
    assert not any(ln.startswith(("torchvision", "timm", "open_clip", "open-clip")) for ln in lines)
    assert any(ln.startswith("jupyter-book>=1.0.4,<2") for ln in lines)
    assert any(ln.startswith("opencv-python-headless") and "<5" in ln for ln in lines)
    assert "--extra-index-url" not in req and "--index-url" not in req
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps and "nodejs" in deps
    pip_section = [d for d in deps if isinstance(d, dict)][0]["pip"]
    assert "-r requirements.txt" in pip_section


def test_book_config_is_strict_and_offline():
    cfg = yaml.safe_load((REPO_ROOT / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "off"
    sphinx = cfg["sphinx"]["config"]
    js = sphinx["nb_ipywidgets_js"]
    assert all(not k.startswith("http") for k in js), "widget JavaScript must be served from the book"
    assert not sphinx["mathjax_path"].startswith("http")
    for folder in sphinx["html_static_path"]:
        assert folder.startswith("data/assets/"), folder
    for excluded in (".venv", "notebooks", "_build"):
        assert excluded in cfg["exclude_patterns"]


def test_chapters_are_listed_in_numeric_order():
    numbers = [f.split("/")[-1][:2] for f in toc_files() if f.startswith("book/chapters/")]
    assert numbers == sorted(numbers), numbers


# --------------------------------------------------------------------------------------------- device and score sign
# Issue #14: notebooks pass P.device (the profile's device), never a literal device string, so "the same code runs on
# a GPU" holds cell by cell; and everything that compares faces returns a similarity, so no notebook flips a sign.
DEVICE_LITERAL = re.compile(r"""(["'])(cpu|cuda(?::\d+)?|mps)\1""")
_UNARY = r"(?:^|[=(\[,:{]|\breturn\b)\s*-\s*"  # a minus where an operand cannot precede it: unary
SCORE_NEGATION = [
    # -scores, -dists, -model.score(...), -comparison.pair_scores["x"], {-eer_score:.3f}
    re.compile(_UNARY + r"\(?\s*(?:np\.|torch\.)?(?:asarray\()?[\w.\[\]'\"]*(?:dist|score|similarit|sims?\b)\w*"),
    re.compile(_UNARY + r"d\b(?!\s*[\w(.\[])"),  # -d
    re.compile(r"\b1(?:\.0)?\s*-\s*[\w.]*(?:dist|cos|similarit|sims?\b)\w*"),  # 1 - dist, 1 - cos_sim
    re.compile(r"\bscores_from_distances\s*\("),  # the conversion belongs where a model is defined
]


def notebook_code_lines(path):
    """(cell index, line) of every code line outside the parameters cell, comments and magics dropped."""
    nb = json.loads(Path(path).read_text())
    for ci, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code" or "parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        for line in "".join(cell["source"]).splitlines():
            code = re.sub(r"#.*$", "", line)  # naive, but a '#' inside a string only hides the rest of that line
            if code.strip() and not code.lstrip().startswith(("%", "!")):
                yield ci, code


def device_literals(path):
    return [f"{Path(path).name} cell {ci}: {line.strip()}" for ci, line in notebook_code_lines(path)
            if DEVICE_LITERAL.search(line)]


def score_negations(path):
    return [f"{Path(path).name} cell {ci}: {line.strip()}" for ci, line in notebook_code_lines(path)
            if any(p.search(line) for p in SCORE_NEGATION)]


@pytest.mark.parametrize("line,hit", [
    ('emb = model.embed(x, device="cpu")', True), ("t = torch.device('cuda')", True), ('x.to("cuda:1")', True),
    ("x = x.cpu().numpy()", False), ("emb = model.embed(x, device=P.device)", False), ('name = "cpu time"', False),
])
def test_device_literal_detector(line, hit):
    assert bool(DEVICE_LITERAL.search(line)) is hit


@pytest.mark.parametrize("line,hit", [
    ("dlib_distances = -comparison.pair_scores['dlib ResNet']", True), ("s = -d", True), ("s = 1 - dist", True),
    ("scores = -recognition.pairwise_distances(a, b)", True), ('f"{-eer_score:.3f}"', True),
    ("return -dists", True), ("s = metrics.scores_from_distances(d)", True), ("acc(y, s, -net.distance_threshold)", True),
    ("gap = a - d", False), ("x = -1", False), ("delta = s_a - s_b", False), ("lr = -d_lr", False),
    ("n = len(scores) - 1", False), ("sim = model.score(a, b)", False), ("z = -simulate(3)", False),
])
def test_score_negation_detector(line, hit):
    assert any(p.search(line) for p in SCORE_NEGATION) is hit


def test_no_literal_device_string_in_notebooks():
    offenders = [o for p in NOTEBOOKS for o in device_literals(p)]
    assert not offenders, "pass P.device instead of a literal device string:\n" + "\n".join(offenders)


def test_no_notebook_negates_scores_or_distances():
    offenders = [o for p in NOTEBOOKS for o in score_negations(p)]
    assert not offenders, (
        "every comparison returns a similarity (facelab.core.scores); do not negate scores or distances in a "
        "notebook:\n" + "\n".join(offenders))
