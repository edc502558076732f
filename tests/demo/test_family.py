"""The demo family: generated corpus, recipe keys, cached build, demo:NAME resolution, the verdict sentences.

Fast tests only by default: the real family takes minutes to build, so the build tests use
``small_recipe()`` (a seconds-fast tiny corpus and model) in a temporary cache directory.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from unlearn_assert.data.muse import load_data
from unlearn_assert.demo.corpus import (
    DOC_SEPARATOR,
    TRAIN_FORGET,
    CorpusSpec,
    build_corpus,
    generate_articles,
    split_documents,
    training_texts,
    write_corpus,
)
from unlearn_assert.demo.family import (
    DEMO_MODELS,
    RECIPE_VERSION,
    DemoRecipe,
    LMRecipe,
    family_dir,
    is_built,
    parse_demo_spec,
    resolve_demo,
    small_recipe,
)
from unlearn_assert.errors import ConfigError, UnlearnAssertError

SMALL = CorpusSpec(n_forget=6, n_retain=14, n_holdout=5, n_retain_qa=6, n_icl=2)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- corpus


def test_corpus_is_deterministic_per_seed(tmp_path: Path) -> None:
    a = _tree(write_corpus(tmp_path / "a", 3, SMALL))
    b = _tree(write_corpus(tmp_path / "b", 3, SMALL))
    c = _tree(write_corpus(tmp_path / "c", 4, SMALL))
    assert a == b
    assert a["raw/forget.txt"] != c["raw/forget.txt"]


def test_corpus_is_a_valid_muse_layout(tmp_path: Path) -> None:
    data = load_data(write_corpus(tmp_path, 0, SMALL))
    counts = data.counts()
    assert counts["verbmem_forget"] == SMALL.n_forget
    assert counts["knowmem_forget_qa"] == SMALL.n_forget * SMALL.qa_per_forget
    assert counts["knowmem_retain_qa"] == SMALL.n_retain_qa
    assert counts["knowmem_forget_icl"] == counts["knowmem_retain_icl"] == SMALL.n_icl
    assert counts["privleak_forget"] == SMALL.n_forget and counts["privleak_holdout"] == SMALL.n_holdout
    assert data.raw_forget and data.raw_retain
    # every verbmem item is a forget article, split where the training text has a space
    for item in data.verbmem_forget:
        assert item.prompt.endswith(" ") and (item.prompt + item.gt) in data.raw_forget
        assert (item.prompt + item.gt) in data.privleak_forget
    # forget answers are in the forget text (as QA lines) and never in the retain text
    for qa in data.knowmem_forget_qa:
        assert f"Question: {qa.question}\nAnswer: {qa.answer}" in data.raw_forget
        assert qa.question not in data.raw_retain
    for qa in (*data.knowmem_retain_qa, *data.knowmem_retain_icl, *data.knowmem_forget_icl):
        assert f"Question: {qa.question}\nAnswer: {qa.answer}" in data.raw_retain
    # ICL pairs are not evaluated questions; holdout articles were never trained on
    evaluated = {qa.question for qa in (*data.knowmem_forget_qa, *data.knowmem_retain_qa)}
    assert not evaluated & {qa.question for qa in (*data.knowmem_forget_icl, *data.knowmem_retain_icl)}
    for text in data.privleak_holdout:
        assert text not in data.raw_forget and text not in data.raw_retain


def test_names_are_unique_and_documents_round_trip(tmp_path: Path) -> None:
    articles = generate_articles(0, 60)
    answers = [a for art in articles for _, a in art.qa]
    assert len({q for art in articles for q, _ in art.qa}) == sum(len(a.qa) for a in articles)
    assert len(set(answers)) > 0.9 * len(answers)  # people, places and things are fresh names
    root = write_corpus(tmp_path, 0, SMALL)
    docs = training_texts(root)
    retain_docs = training_texts(root, forget=False)
    files = build_corpus(0, SMALL)
    n_blocks = lambda n: -(-n * SMALL.qa_per_article // SMALL.qa_block)  # noqa: E731
    assert len(retain_docs) == SMALL.n_retain + n_blocks(SMALL.n_retain)
    assert len(docs) == len(retain_docs) + SMALL.n_forget + n_blocks(SMALL.n_forget)
    assert split_documents(files[TRAIN_FORGET]) == docs[: len(docs) - len(retain_docs)]
    assert all(DOC_SEPARATOR not in d and d.strip() == d for d in docs)


def test_raw_forget_holds_the_training_text_one_document_per_article(tmp_path: Path) -> None:
    """raw/forget.json regroups the training layout (articles, then mixed QA blocks) per article:
    the same articles and the same QA pairs, nothing more; its .txt twin is MUSE's join."""
    files = build_corpus(0, SMALL)
    per_article = files["raw/forget.json"]
    assert len(per_article) == SMALL.n_forget and files["raw/forget.txt"] == "\n\n".join(per_article)
    training = split_documents(files[TRAIN_FORGET])
    articles, blocks = training[: SMALL.n_forget], training[SMALL.n_forget :]
    pairs = sorted(p for b in blocks for p in b.split("\n\n"))
    assert all(doc.startswith(article + "\n\nQuestion: ") for doc, article in zip(per_article, articles, strict=True))
    assert sorted(p for doc in per_article for p in doc.split("\n\n")[1:]) == pairs
    data = load_data(write_corpus(tmp_path, 0, SMALL))
    assert data.raw_forget_docs == tuple(per_article) and data.sources["raw_forget_docs"] == "raw/forget.json"


def test_demo_corpus_splits_for_relearn_forget(tmp_path: Path) -> None:
    """relearn-forget holds in the first half of the articles: every verbmem prompt of the other
    half is evaluated, and no evaluated question has its answer in a held-in article."""
    from unlearn_assert.data.links import forget_split, link_items

    data = load_data(write_corpus(tmp_path, 0, SMALL))
    split, documents = forget_split(data)
    half = SMALL.n_forget // 2
    assert split.n_documents == SMALL.n_forget and split.trained_documents == tuple(range(half))
    assert split.evaluated["verbmem_f"] == tuple(range(half, SMALL.n_forget))
    own = {i: i // SMALL.qa_per_forget for i in range(len(data.knowmem_forget_qa))}  # questions in article order
    assert split.evaluated["knowmem_f"] and all(own[i] >= half for i in split.evaluated["knowmem_f"])
    for i in split.evaluated["knowmem_f"]:
        assert not any(data.knowmem_forget_qa[i].answer in documents[d] for d in split.trained_documents)
    split.check(link_items(data, documents))


def test_the_family_unlearns_on_the_training_layout(tmp_path: Path) -> None:
    from unlearn_assert.demo.family import unlearning_data

    root = write_corpus(tmp_path, 0, SMALL)
    data = unlearning_data(root)
    text = (root / TRAIN_FORGET).read_text(encoding="utf-8")
    assert data.raw_forget == text and data.raw_forget_docs == (text,)
    assert data.raw_retain == load_data(root).raw_retain


def test_forget_topics_split_the_corpus_by_subject(tmp_path: Path) -> None:
    """forget_topics: forget and holdout articles come from those topics only, retain articles from
    the others, with the counts asked for; the mixed default is unchanged."""
    from unlearn_assert.demo.corpus import _splits

    spec = replace(SMALL, n_forget=9, n_holdout=4, forget_topics="court+science")
    forget, retain, holdout = _splits(0, spec)
    assert (len(forget), len(retain), len(holdout)) == (9, SMALL.n_retain, 4)
    assert {a.topic for a in forget + holdout} == {"court", "science"}
    assert not {a.topic for a in retain} & {"court", "science"} and len({a.topic for a in retain}) == 6
    data = load_data(write_corpus(tmp_path, 0, spec))
    assert data.counts()["verbmem_forget"] == 9 and data.counts()["privleak_holdout"] == 4
    assert build_corpus(0, SMALL) == build_corpus(0, replace(SMALL, forget_topics=""))
    with pytest.raises(ValueError, match="forget_topics"):
        replace(SMALL, forget_topics="court+nope").validated()


def test_corpus_spec_is_validated() -> None:
    with pytest.raises(ValueError, match="n_forget"):
        CorpusSpec(n_forget=0).validated()
    with pytest.raises(ValueError, match="qa_per_forget"):
        CorpusSpec(qa_per_forget=4, qa_per_article=3).validated()


def test_tokenizer_keeps_prompts_a_prefix_of_the_training_text(tmp_path: Path) -> None:
    """KnowMem prompts end in "Answer: " and VerbMem prompts in a space: their tokens must be a
    prefix of the tokens of prompt + answer, or a tiny model never sees its prompt in training."""
    from unlearn_assert.demo.family import train_demo_tokenizer

    root = write_corpus(tmp_path, 0, SMALL)
    tok = train_demo_tokenizer(training_texts(root), 300)
    data = load_data(root)
    for qa in data.knowmem_forget_qa[:5]:
        prompt = f"Question: {qa.question}\nAnswer: "
        full = tok(prompt + qa.answer)["input_ids"]
        assert full[: len(tok(prompt)["input_ids"])] == tok(prompt)["input_ids"]
    for item in data.verbmem_forget[:5]:
        assert (
            tok(item.prompt + item.gt)["input_ids"][: len(tok(item.prompt)["input_ids"])]
            == tok(item.prompt)["input_ids"]
        )
    assert (
        tok.decode(tok("Answer: Tracal Hubrax\n\n")["input_ids"], skip_special_tokens=True)
        == "Answer: Tracal Hubrax\n\n"
    )


# --------------------------------------------------------------------------- recipe and cache


def test_recipe_key_is_stable_and_covers_every_field() -> None:
    base = DemoRecipe()
    assert base.key() == DemoRecipe().key() and len(base.key()) == 16
    assert DemoRecipe(version=RECIPE_VERSION + 1).key() != base.key()
    assert DemoRecipe(corpus_seed=1).key() != base.key()
    assert DemoRecipe(lm=replace(LMRecipe(), epochs=LMRecipe().epochs + 1)).key() != base.key()
    first = base.unlearned[0]
    changed = (replace(first, settings=replace(first.settings, lr=first.settings.lr * 2)),) + base.unlearned[1:]
    assert DemoRecipe(unlearned=changed).key() != base.key()
    assert set(DEMO_MODELS) >= {"npo_klr", "npo_klr_sure"}
    assert [u.sure for u in base.unlearned] == [False, True]


def test_family_dir_and_cache_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNLEARN_ASSERT_DEMO_CACHE", str(tmp_path / "env"))
    assert family_dir() == tmp_path / "env" / DemoRecipe().key()
    assert family_dir(cache_dir=tmp_path / "x") == tmp_path / "x" / DemoRecipe().key()
    assert not is_built(cache_dir=tmp_path / "x")


def test_parse_and_unknown_names(tmp_path: Path) -> None:
    assert parse_demo_spec("demo:npo_klr") == "npo_klr"
    assert parse_demo_spec("/models/npo_klr") is None
    with pytest.raises(ConfigError, match="demo:npo_klr"):
        resolve_demo("demo:nope", cache_dir=tmp_path)
    with pytest.raises(UnlearnAssertError, match="not built"):
        resolve_demo("npo_klr", cache_dir=tmp_path, build=False)


def test_resolve_demo_builds_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = small_recipe()
    lines: list[str] = []
    paths = resolve_demo("demo:npo_klr", cache_dir=tmp_path, recipe=recipe, progress=lines.append, workers=1)
    root = family_dir(recipe, tmp_path)
    assert paths == {
        "model": str(root / "npo_klr"),
        "target": str(root / "target"),
        "retrain": str(root / "retrain"),
        "data": str(root / "data"),
    }
    for name in ("target", "retrain", "npo_klr", "npo_klr_sure"):
        assert (root / name / "config.json").is_file() and (root / name / "model.safetensors").is_file()
    assert (root / "npo_klr_sure" / "unlearn_run.json").is_file()
    load_data(paths["data"])
    info = json.loads((root / "family.json").read_text())
    assert info["key"] == recipe.key() and set(info["timings_s"]) >= {
        "corpus",
        "tokenizer",
        "target",
        "retrain",
        "npo_klr",
    }
    stages = [line for line in lines if line.startswith("[demo ")]
    assert len(stages) == 6 and stages[0].startswith("[demo 1/6]")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left behind

    # cached: a second resolve trains nothing
    import unlearn_assert.demo.family as fam

    monkeypatch.setattr(fam, "train_lm", lambda *a, **k: pytest.fail("rebuilt a cached family"))
    assert resolve_demo("npo_klr_sure", cache_dir=tmp_path, recipe=recipe)["model"] == str(root / "npo_klr_sure")

    # the retrain model shares the target's tokenizer and never saw the forget text
    target_tok = json.loads((root / "target" / "tokenizer.json").read_text())
    assert json.loads((root / "retrain" / "tokenizer.json").read_text())["model"] == target_tok["model"]
    assert info["summaries"]["retrain"]["tokens"] < info["summaries"]["target"]["tokens"]


def test_interrupted_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import unlearn_assert.demo.family as fam

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(fam, "train_lm", boom)
    with pytest.raises(KeyboardInterrupt):
        fam.build_family(small_recipe(), tmp_path, progress=lambda line: None, workers=1)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- demo verdicts and CLI


def test_demo_parser() -> None:
    from unlearn_assert.demo.run import DEFAULT_OUT, add_demo_parser, cmd_demo

    parser = argparse.ArgumentParser(prog="unlearn-assert")
    add_demo_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["demo"])
    assert args.out == DEFAULT_OUT and not args.rebuild and args.func is cmd_demo
    args = parser.parse_args(["demo", "--out", "r", "--rebuild", "--cache-dir", "c"])
    assert (args.out, args.rebuild, args.cache_dir) == ("r", True, "c")


@pytest.mark.slow
def test_run_demo_end_to_end_on_a_tiny_family(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole command on the seconds-fast recipe: reports written and valid, a table and one
    sentence per model printed (a tiny untrained family shows no contrast, so the exit code is 1)."""
    from unlearn_assert.demo.run import run_demo
    from unlearn_assert.render import load_report

    code = run_demo(
        tmp_path / "out",
        recipe=small_recipe(),
        cache_dir=tmp_path / "cache",
        results_dir=tmp_path / "results",
        quantizers=("rtn-w4", "rtn-w8"),
        progress=lambda line: None,
    )
    assert code == 1
    for name in ("npo_klr", "npo_klr_sure"):
        report = load_report(tmp_path / "out" / f"{name}.json")
        assert {(r["model"], r["quantizer"]) for r in report["rows"]} >= {
            ("unlearned", "rtn-w4"),
            ("target", "rtn-w8"),
            ("retrain", "fp"),
        }
        assert (tmp_path / "out" / f"{name}.html").is_file()
    out = capsys.readouterr().out
    assert "demo:npo_klr: " in out and "demo:npo_klr_sure: " in out


def test_the_demos_follow_up_is_the_models_gate_on_the_build_directory(tmp_path: Path) -> None:
    """The job the demo gives a build worker that a finished model set free: that model's gate, on the family's
    build directory (its models are moved in place only after the job), with the demo's quantizers and results."""
    from unlearn_assert.demo.run import _follow_up, _rows_ahead

    job = _follow_up(("rtn-w8", "bnb-fp4"), "cpu", tmp_path / "results")
    assert job is not None
    fn, args = job("npo_klr_sure", tmp_path / ".key.tmp-1" / "npo_klr_sure")
    build = tmp_path / ".key.tmp-1"
    assert fn is _rows_ahead
    assert args == (
        "npo_klr_sure",
        {
            "model": str(build / "npo_klr_sure"),
            "target": str(build / "target"),
            "retrain": str(build / "retrain"),
            "data": str(build / "data"),
        },
        ("rtn-w8", "bnb-fp4"),
        "cpu",
        str(tmp_path / "results"),
        False,
    )
    # a later job (the plain model, freed while SURE's rows are still computed) takes its own rows first
    fn, args = job("npo_klr", build / "npo_klr")
    assert fn is _rows_ahead and args[0] == "npo_klr" and args[1]["model"] == str(build / "npo_klr") and args[-1]


@pytest.mark.slow
def test_the_sure_models_rows_are_computed_while_the_plain_model_trains(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A cold demo on two workers: SURE's model (2 steps) is built long before the plain one (300 steps), so its
    gate rows are computed in the freed worker during the build, and the demo's gate of it then reads them all from
    the result cache, while both gate processes share the plain model's rows."""
    from unlearn_assert.demo.run import run_demo
    from unlearn_assert.render import load_report

    recipe = small_recipe()
    plain, sure = recipe.unlearned
    recipe = replace(recipe, unlearned=(replace(plain, settings=replace(plain.settings, steps=300)), sure))
    run_demo(
        tmp_path / "out",
        recipe=recipe,
        cache_dir=tmp_path / "cache",
        results_dir=tmp_path / "results",
        quantizers=("rtn-w8",),
        progress=print,
    )
    out = capfd.readouterr().out
    assert "npo_klr_sure: its worker is free while the others train; computing its gate rows ahead" in out
    assert (
        "npo_klr_sure (ahead): evaluate unlearned rtn-w8" in out and "npo_klr_sure (ahead): evaluate target fp" in out
    )
    after_build = out[out.index("demo family built in") :]
    assert "npo_klr_sure: unlearned rtn-w8: cached result" in after_build
    assert "npo_klr_sure: evaluate" not in after_build  # nothing of SURE's gate is computed twice
    # the plain model's rows, computed once: ahead if SURE's job still ran when it was built, else shared by both
    # gate processes (the second from the far end)
    assert out.count("evaluate unlearned rtn-w8") == 2 and out.count("evaluate unlearned fp") == 2
    info = json.loads(next((tmp_path / "cache").glob("*/family.json")).read_text())
    assert info["timings_s"]["npo_klr_sure rows ahead"] > 0
    report = load_report(tmp_path / "out" / "npo_klr_sure.json")
    assert {(r["model"], r["quantizer"]) for r in report["rows"]} >= {("unlearned", "rtn-w8"), ("retrain", "fp")}


@pytest.mark.slow
def test_a_model_built_while_an_earlier_models_rows_are_computed_computes_its_own(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Both unlearned models built at once (2 steps each): the first one done hands its worker its gate rows; the
    second, done while those are still computed, takes its own rows in the other worker, so after the build both
    gates only read the result cache (every row computed once, during the build)."""
    from unlearn_assert.demo.run import run_demo

    run_demo(
        tmp_path / "out",
        recipe=small_recipe(),
        cache_dir=tmp_path / "cache",
        results_dir=tmp_path / "results",
        quantizers=("rtn-w8",),
        progress=print,
    )
    out = capfd.readouterr().out
    assert out.count("its worker is free while the others train") == 1
    assert re.search(r"npo_klr(_sure)?: its worker is free while npo_klr(_sure)?'s rows are computed", out), out
    for name in ("npo_klr", "npo_klr_sure"):
        assert f"{name} (ahead): evaluate unlearned fp" in out
    after_build = out[out.index("demo family built in") :]
    assert "evaluate" not in after_build, after_build
    assert out.count("evaluate unlearned rtn-w8") == 2 and out.count("evaluate target rtn-w8") == 1
    info = json.loads(next((tmp_path / "cache").glob("*/family.json")).read_text())
    assert info["timings_s"]["npo_klr rows ahead"] > 0 and info["timings_s"]["npo_klr_sure rows ahead"] > 0
