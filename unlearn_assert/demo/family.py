"""The demo family: a generated corpus, a tiny Llama target that knows it, a retrain model and
unlearned models, built once and cached under the user cache dir, keyed by the recipe.

Why it exists: the tool's main job ("does unlearning survive quantization?") needs real models to
show anything, and nothing may be downloaded. So the family is trained here, on this machine's
CPU, from a recipe whose every number is in :class:`DemoRecipe`; its sha256 (with
:data:`RECIPE_VERSION`) names the cache directory, so a changed recipe never reuses stale weights.

Layout of ``<cache>/unlearn-assert/demo/<recipe key>/``::

    data/          the MUSE-layout corpus (unlearn_assert.demo.corpus)
    target/        trained on train/forget.txt + raw/retain.txt (articles and their QA fact sheets)
    retrain/       the same recipe on raw/retain.txt only, same tokenizer
    <name>/        one unlearned model per UnlearnRecipe (e.g. npo_klr, npo_klr_sure)
    family.json    the recipe, timings and training summaries (written last)

The whole directory is built in a hidden sibling and renamed into place, so an interrupted build
never looks finished; a concurrent build of the same recipe loses the rename race and discards its
copy. Models are saved in bfloat16, the dtype of the weights during unlearning (bf16 weights with a
small learning rate is the regime in which 4-bit quantization undoes unlearning, see
docs/demo-regime.md). Every step computes in float32 on every CPU: the target and retrain model
train in float32, and the unlearning emulates bf16 storage (float32 weights rounded to bf16 after
each step), so no bf16 matmul runs and the build takes the same path on AVX2, AVX512 and ARM.

Nothing here imports torch at module level: config.py resolves ``demo:NAME`` lazily through
:func:`resolve_demo`, and ``unlearn-assert --help`` imports :mod:`unlearn_assert.demo.run`.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, UnlearnAssertError
from ..fs import user_path
from ..plain import digest
from ..unlearning.settings import UnlearnSettings
from .corpus import CORPUS_VERSION, TRAIN_FORGET, CorpusSpec, training_forget_text, training_texts, write_corpus

if TYPE_CHECKING:  # pragma: no cover
    from ..data.muse import MuseData

__all__ = [
    "DEMO_MODELS",
    "RECIPE_VERSION",
    "DemoRecipe",
    "LMRecipe",
    "UnlearnRecipe",
    "build_family",
    "default_demo_cache",
    "family_dir",
    "is_built",
    "parse_demo_spec",
    "model_paths",
    "resolve_demo",
]

#: Bump whenever the build code changes what a recipe produces (it is part of the cache key).
RECIPE_VERSION = 7  # 2: float32 training, bf16 weight storage emulated in float32 during unlearning;
# 3: larger forget evaluation sets (CorpusSpec) and SURE at 200 steps, the same build code (issue 12);
# 4: a forget set about two subjects (64 articles), MLP 768, npo_klr at lr 3e-5 x 1200 steps, SURE at lr 1e-4 on the
# top 5% of modules, 116 knowmem_r questions (issue 26, docs/demo-regime.md);
# 5: npo_klr with NPO's beta 0.07 for 900 steps, SURE with the retain term weighted 4 (issue 26, session 12);
# 6: npo_klr for 600 steps (session 13; reverted: a seed cell failed); 7: npo_klr's retain term on one retain sequence
# a step (retain_batch_size 1), so the cold demo fits 10 minutes (issue 26, session 14)
#: Environment variable that overrides the demo cache root (tests, CI images with a prebuilt family).
CACHE_ENV = "UNLEARN_ASSERT_DEMO_CACHE"
FAMILY_FILE = "family.json"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class LMRecipe:
    """Architecture and training of the target (and, on retain text only, of the retrain model)."""

    vocab_size: int = 1024
    hidden_size: int = 256
    intermediate_size: int = 768  # a multiple of 256, so gguf-q4_k_m stores every tensor as q4_K / q6_K (688: q5_0)
    num_layers: int = 4
    num_heads: int = 4
    max_positions: int = 512
    epochs: int = 25
    lr: float = 1.5e-3
    warmup: float = 0.05  # share of the steps with a linear warm-up
    final_lr: float = 0.1  # cosine decay to this fraction of lr
    batch_size: int = 16
    seq_len: int = 128
    weight_decay: float = 0.0
    seed: int = 0
    autocast: str | None = None  # bf16 autocast would emulate every matmul on a CPU without native bf16 (28x slower)
    save_dtype: str = "bfloat16"


@dataclass(frozen=True)
class UnlearnRecipe:
    """One unlearned model of the family: a name, the settings handed to
    :func:`unlearn_assert.unlearning.unlearn` (logging aside), and what it stands for."""

    name: str
    settings: UnlearnSettings
    description: str = ""

    @property
    def sure(self) -> bool:
        return self.settings.sure

    def run_settings(self, log_every: int = 50) -> UnlearnSettings:
        """The validated settings of the run (how often it logs does not change the model)."""
        return replace(self.settings, log_every=log_every).validated()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UnlearnRecipe:
        """Rebuild from ``dataclasses.asdict`` output (what a worker process receives)."""
        return cls(
            name=data["name"], settings=UnlearnSettings(**data["settings"]), description=data.get("description", "")
        )


#: UnlearnSettings fields added after recipe version 3, with their defaults (left out of the recipe key when default).
_LATER_SETTINGS: dict[str, Any] = {"quant_aware": (), "quant_aware_weight": 1.0, "retain_batch_size": None}

# Recipe 5 (issue 26, docs/demo-regime.md): lr 3e-5 is the largest learning rate at which a bf16 weight of
# 7.8e-3 or more cannot move (half its bf16 step is 3.05e-5), so the plain model changes only small weights,
# which the smallest cells of a 4-bit grid hold. NPO's beta 0.07 (the paper's 0.1 in recipe 4) keeps the forget
# term from saturating: its weight per text, 2 sigmoid(beta log(p/p_ref)), fades once a text's log-ratio is
# about -3/beta, so at 0.1 the forgetting stopped growing at 26-28 points of verbmem_f (and at 15 on corpus seed
# 1); at 0.07 it reaches 42-48 points in 600-900 steps, and bnb-fp4 still brings back 55-58% of it (at 0.05 and
# 0.02 the moves grow past the grids' zero cells and less or none comes back). 900 steps, not 600: at 600 (a cold
# demo of 9 min 18 s) corpus seed 1 at unlearning seed 1 resolves its knowmem_f drop only within 25.5-26.4%, and the
# demo's judge fails that cell on both kernel paths (session 13). Recipe 7 keeps the 900 steps and computes the KL
# retain term on one retain sequence a step instead of four (the forget batch stays 4): a step costs 0.23-0.25 s, not
# 0.35 with AVX2-only kernels, which is what brings the cold demo within 10 minutes, and the retain term keeps its
# expectation (docs/demo-regime.md, session 14: the 12 seed cells). SURE moves 2 modules at lr 1e-4, far enough that
# 4-bit grids keep the moves, with the KL retain term weighted 4 (alpha): with 1 it kept only 84.5% of the target's
# knowmem_r on corpus seed 1's target.
DEFAULT_UNLEARNED: tuple[UnlearnRecipe, ...] = (
    UnlearnRecipe(
        name="npo_klr",
        settings=UnlearnSettings(
            method="npo_klr", lr=3e-5, steps=900, beta=0.07, dtype="bfloat16", retain_batch_size=1
        ),
        description="NPO (beta 0.07) + KL retain regularizer (one retain sequence a step), small constant learning "
        "rate (3e-5), bf16 weights: the common recipe",
    ),
    UnlearnRecipe(
        name="npo_klr_sure",
        settings=UnlearnSettings(
            method="npo_klr", lr=1e-4, steps=200, alpha=4.0, dtype="bfloat16", sure=True, sure_top=0.05
        ),
        description="the same method with SURE: a larger learning rate (1e-4) on the 5% most salient linear "
        "modules, the retain term weighted 4",
    ),
)
#: The demo's corpus (recipe 4): 64 forget articles about two subjects (court and science news), so the
#: verbmem_f drop is measured on 64 passages; 64 retain articles of the six other subjects, two knowmem_r
#: questions on each of 58 (116: with 58, one question was 2% of the target's knowmem_r).
DEMO_CORPUS = CorpusSpec(
    n_forget=64, n_retain=64, n_holdout=16, qa_per_retain=2, n_retain_qa=58, forget_topics="court+science"
)


@dataclass(frozen=True)
class DemoRecipe:
    """Everything that determines the demo family; its :meth:`key` names the cache directory."""

    corpus_seed: int = 0
    corpus: CorpusSpec = DEMO_CORPUS
    lm: LMRecipe = field(default_factory=LMRecipe)
    unlearned: tuple[UnlearnRecipe, ...] = DEFAULT_UNLEARNED
    version: int = RECIPE_VERSION

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["corpus_version"] = CORPUS_VERSION
        for u in out["unlearned"]:  # settings added after recipe v3 appear only when used, so older keys stay valid
            for name, default in _LATER_SETTINGS.items():
                if u["settings"].get(name) == default:
                    del u["settings"][name]
        return out

    def key(self) -> str:
        """First 16 hex digits of the sha256 of the canonical JSON of the recipe (version included)."""
        return digest(self.to_dict())[:16]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(u.name for u in self.unlearned)

    def unlearn_recipe(self, name: str) -> UnlearnRecipe:
        for u in self.unlearned:
            if u.name == name:
                return u
        raise ConfigError(f"unknown demo model '{name}'; the demo family has {', '.join(self.names)}")

    def validated(self) -> DemoRecipe:
        self.corpus.validated()
        names = self.names
        if not names or len(set(names)) != len(names):
            raise ConfigError("a demo recipe needs unlearned models with distinct names")
        for n in names:
            if n in ("data", "target", "retrain") or not n.replace("_", "").isalnum():
                raise ConfigError(f"demo model name '{n}' is reserved or not a plain identifier")
        return self


DEFAULT_RECIPE = DemoRecipe()
#: The demo model names of the default recipe (what ``--unlearn-model=demo:NAME`` accepts).
DEMO_MODELS: tuple[str, ...] = DEFAULT_RECIPE.names


# --------------------------------------------------------------------------- locations


def default_demo_cache() -> Path:
    """``$UNLEARN_ASSERT_DEMO_CACHE``, else ``$XDG_CACHE_HOME/unlearn-assert/demo`` (``~/.cache`` by default)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "unlearn-assert" / "demo"


def family_dir(recipe: DemoRecipe | None = None, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    recipe = recipe or DEFAULT_RECIPE
    root = user_path(cache_dir) if cache_dir is not None else default_demo_cache()
    return root / recipe.key()


def is_built(recipe: DemoRecipe | None = None, cache_dir: str | os.PathLike[str] | None = None) -> bool:
    return (family_dir(recipe, cache_dir) / FAMILY_FILE).is_file()


def parse_demo_spec(spec: str) -> str | None:
    """``"demo:npo_klr"`` -> ``"npo_klr"``; anything not starting with ``demo:`` -> None."""
    if not isinstance(spec, str) or not spec.startswith("demo:"):
        return None
    return spec[len("demo:") :].strip()


# --------------------------------------------------------------------------- tokenizer


def train_demo_tokenizer(texts: Sequence[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer whose pre-tokens carry their *trailing* whitespace.

    Why not GPT-2's pre-tokenizer (leading space, ``" Mira"``): MUSE's KnowMem prompt ends in
    ``"Answer: "``, so the space is the prompt's last character. With leading-space pre-tokens the
    prompt ends in a lone space token that never precedes an answer in the training text, and a
    tiny model answers nothing. Splitting after every whitespace character makes ``"Answer: "``
    the same pre-token in the prompt and in training (likewise the VerbMem prompts, which end with
    the space that separates them from their continuation).
    """
    from ..testing import train_tokenizer

    return train_tokenizer(texts, vocab_size, trailing_whitespace=True)


# --------------------------------------------------------------------------- language-model training


def _lr_at(step: int, total: int, lm: LMRecipe) -> float:
    warm = max(1, int(lm.warmup * total))
    if step < warm:
        return lm.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return lm.lr * (lm.final_lr + (1 - lm.final_lr) * 0.5 * (1 + math.cos(math.pi * progress)))


def train_lm(
    out_dir: Path,
    docs: Sequence[str],
    tokenizer: Any,
    lm: LMRecipe,
    *,
    label: str,
    progress: Progress,
    epochs: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train a Llama from scratch on ``docs`` (fp32 weights, AdamW, warm-up + cosine), save it in
    ``lm.save_dtype`` with the tokenizer. Each epoch packs the shuffled documents (BOS + text + EOS)
    into one stream and cuts it into ``seq_len`` windows from a random offset."""
    import torch
    from transformers import LlamaForCausalLM

    from ..models import quiet_transformers
    from ..testing import llama_config

    epochs = lm.epochs if epochs is None else epochs
    torch.manual_seed(lm.seed)
    rng = random.Random(lm.seed)
    encoded = [
        [tokenizer.bos_token_id] + tokenizer(d, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        for d in docs
    ]
    n_tokens = sum(len(e) for e in encoded)
    per_step = lm.batch_size * lm.seq_len
    steps_per_epoch = max(1, n_tokens // per_step)
    total = steps_per_epoch * epochs
    config = llama_config(
        tokenizer, lm.hidden_size, lm.intermediate_size, lm.num_layers, lm.num_heads, lm.max_positions
    )
    model = LlamaForCausalLM(config).to(device)  # type: ignore[arg-type]  # transformers' decorated .to()
    opt = torch.optim.AdamW(model.parameters(), lr=lm.lr, weight_decay=lm.weight_decay, betas=(0.9, 0.98))
    model.train()
    start = time.perf_counter()
    step = 0
    losses: list[float] = []
    report_every = max(1, epochs // 12)
    last_report = start
    for epoch in range(1, epochs + 1):
        order = list(range(len(encoded)))
        rng.shuffle(order)
        stream = [t for i in order for t in encoded[i]]
        offset = rng.randrange(0, lm.seq_len)
        stream = stream[offset:] + stream[:offset]
        windows = (
            torch.tensor(stream[: steps_per_epoch * per_step], dtype=torch.long)
            .view(steps_per_epoch, lm.batch_size, lm.seq_len)
            .to(device)
        )
        epoch_loss = 0.0
        for batch in windows:
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, total, lm)
            with torch.autocast(
                torch.device(device).type,
                dtype=getattr(torch, lm.autocast or "float32"),
                enabled=lm.autocast is not None,
            ):
                loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            epoch_loss += float(loss.detach())
            step += 1
        losses.append(epoch_loss / steps_per_epoch)
        now = time.perf_counter()
        if epoch % report_every == 0 or epoch == epochs or now - last_report > 20:
            progress(f"  {label}: epoch {epoch}/{epochs}  loss {losses[-1]:.3f}  ({now - start:.0f} s)")
            last_report = now
    model.eval()
    model.to(device="cpu", dtype=getattr(torch, lm.save_dtype))
    model.config.dtype = lm.save_dtype
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    return {
        "documents": len(docs),
        "tokens": n_tokens,
        "epochs": epochs,
        "steps": total,
        "final_loss": losses[-1],
        "loss_per_epoch": [round(x, 4) for x in losses],
        "seconds": round(time.perf_counter() - start, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


# --------------------------------------------------------------------------- the build


def progress_printer(progress: Progress | None) -> Progress:
    """``progress``, or print each line at once (the demo's stages take minutes; nothing may buffer)."""
    if progress is not None:
        return progress
    return lambda line: print(line, flush=True)


def _job_train(
    out_dir: str,
    data_dir: str,
    tokenizer_dir: str,
    lm: dict[str, Any],
    label: str,
    forget: bool,
    threads: int | None,
    say: Progress | None,
) -> dict[str, Any]:
    """Train the target (``forget=True``) or the retrain model; runs in a worker process or in-process."""
    from transformers import AutoTokenizer

    from ..scaleout.workers import set_torch_threads

    if threads:
        set_torch_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    docs = training_texts(data_dir, forget=forget)
    progress = progress_printer(say)
    return train_lm(Path(out_dir), docs, tokenizer, LMRecipe(**lm), label=label, progress=progress)


def _job_unlearn(
    target_dir: str, data_dir: str, out_dir: str, u: dict[str, Any], threads: int | None, say: Progress | None
) -> dict[str, Any]:
    """Make one unlearned model of the family; runs in a worker process or in-process."""
    from ..scaleout.workers import set_torch_threads
    from ..unlearning.trainer import save_unlearned, unlearn

    if threads:
        set_torch_threads(threads)
    recipe = UnlearnRecipe.from_dict(u)
    progress = progress_printer(say)
    settings = recipe.run_settings(log_every=max(1, (recipe.settings.steps or 1) // 10))
    result = unlearn(
        target_dir, unlearning_data(data_dir), settings, progress=lambda line: progress(f"  {recipe.name}: {line}")
    )
    save_unlearned(result, out_dir)
    return {
        "steps": result.steps,
        "seconds": result.seconds,
        "final": result.curve[-1] if result.curve else None,
        "sure_selected": result.selected_modules,
    }


def unlearning_data(data_dir: str | os.PathLike[str]) -> MuseData:
    """The corpus as the family unlearns on it: MUSE's data, with the raw forget text in its training
    layout (``train/forget.txt``, exactly what the target learned) instead of ``raw/forget.json``'s
    per-article documents (the same text, grouped so that relearn-forget can split it)."""
    from ..data.muse import load_data

    data = load_data(data_dir)
    text = training_forget_text(data_dir)
    return replace(
        data, raw_forget=text, raw_forget_docs=(text,), sources={**data.sources, "raw_forget_docs": TRAIN_FORGET}
    )


def default_workers() -> int:
    """Two worker processes on a machine with two or more cores (target and retrain train side by
    side, then the unlearned models), else one (everything in-process, one after the other)."""
    return 2 if (os.cpu_count() or 1) >= 2 else 1


#: A job for a worker that a built model set free: ``follow_up(name, directory)`` gives ``(function, args)`` to run in
#: the pool (``function`` must be importable by name: the workers are spawned), or None.
FollowUp = Callable[[str, Path], "tuple[Callable[..., Any], tuple[Any, ...]] | None"]


def build_family(
    recipe: DemoRecipe | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    progress: Progress | None = None,
    rebuild: bool = False,
    workers: int | None = None,
    follow_up: FollowUp | None = None,
) -> Path:
    """Build the family for ``recipe`` (if not already cached) and return its directory.

    With ``workers`` >= 2 (default on a multi-core machine) the independent stages run side by side
    in worker processes: target and retrain, then the unlearned models. Every training runs on one
    CPU thread, in workers and in-process alike: single-threaded kernels make the build
    bit-reproducible on a machine (the demo's numbers do not change between builds), and on a small
    shared machine two one-thread processes finish far sooner than one process whose two threads
    keep waiting for each other (measured here: 5x). ``workers=1`` runs everything in this process
    (what the tests use; the caller's thread setting is restored). Worker processes print their own
    progress lines to stdout; ``progress`` receives the stage lines.

    ``follow_up``: when an unlearned model is built while another of its stage still trains (SURE's 200 steps
    beside the plain model's 900), or while an earlier model's follow-up still runs, its worker would idle; the
    job ``follow_up`` gives for that model runs there instead (the demo computes the model's gate rows into the
    result cache: :func:`.run.run_demo`). The build waits for those jobs before it moves the family in place
    (they read its models); one that fails is reported in a line and changes nothing else.
    """
    recipe = (recipe or DEFAULT_RECIPE).validated()
    say = progress_printer(progress)
    final = family_dir(recipe, cache_dir)
    if (final / FAMILY_FILE).is_file() and not rebuild:
        return final
    workers = default_workers() if workers is None else max(1, int(workers))
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{int(time.time() * 1000) % 100000}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    n_stages = 4 + len(recipe.unlearned)
    stage = 0
    timings: dict[str, float] = {}
    summaries: dict[str, Any] = {}
    t_all = time.perf_counter()
    pool: Any = None
    ahead: list[tuple[str, Any, float]] = []  # follow-up jobs: (model, future, start)
    ended: dict[str, float] = {}  # when each follow-up job ended (it may end long before the build waits for it)

    def begin(text: str) -> float:
        nonlocal stage
        stage += 1
        say(f"[demo {stage}/{n_stages}] {text}")
        return time.perf_counter()

    def run_jobs(
        jobs: list[tuple[str, Callable[..., dict[str, Any]], tuple[Any, ...], float]], unlearned: bool = False
    ) -> None:
        """Run (name, function, args, start) jobs, in the pool if there is one; record summaries and times.
        ``unlearned``: jobs of unlearned models, whose freed worker takes ``follow_up``'s job."""
        if pool is None:
            from ..scaleout.workers import torch_threads

            with torch_threads():  # each job sets its own threads; the caller's count comes back after
                for name, fn, args, t in jobs:
                    summaries[name] = fn(*args, say)
                    timings[name] = time.perf_counter() - t
                    say(f"  {name}: done in {timings[name]:.0f} s")
            return
        futures = {pool.submit(fn, *args, None): (name, t) for name, fn, args, t in jobs}
        from concurrent.futures import as_completed

        running = set(futures)
        for future in as_completed(futures):
            name, t = futures[future]
            summaries[name] = future.result()
            timings[name] = time.perf_counter() - t
            say(f"  {name}: done in {timings[name]:.0f} s")
            running.discard(future)
            # a freed worker takes the model's follow-up while the others train, or while an earlier follow-up
            # still runs (its rows and this one's then share the two workers instead of one)
            busy = [n for n, f, _ in ahead if not f.done()]
            job = follow_up(name, tmp / name) if unlearned and (running or busy) and follow_up is not None else None
            if job is not None:
                why = "the others train" if running else f"{', '.join(busy)}'s rows are computed"
                say(f"  {name}: its worker is free while {why}; computing its gate rows ahead")
                future = pool.submit(job[0], *job[1])
                future.add_done_callback(lambda _f, n=name: ended.setdefault(n, time.perf_counter()))
                ahead.append((name, future, time.perf_counter()))

    def wait_ahead() -> None:
        """Wait for the follow-up jobs (they read the models in ``tmp``); a failed one only costs its time."""
        for name, future, t in ahead:
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - an optimisation failed: the gate computes the rows itself
                say(f"  {name}: computing its rows ahead failed ({type(exc).__name__}: {exc}); the gate will")
            else:
                timings[f"{name} rows ahead"] = ended.get(name, time.perf_counter()) - t

    try:
        say(
            f"building the demo family (recipe {recipe.key()}) in {final}; this happens once "
            f"({f'{workers} processes side by side' if workers > 1 else 'one process'})"
        )
        t = begin("corpus: generating fictitious news (forget / retain / holdout articles, QA, prompts)")
        data = write_corpus(tmp / "data", recipe.corpus_seed, recipe.corpus)
        timings["corpus"] = time.perf_counter() - t

        t = begin(f"tokenizer: byte-level BPE, {recipe.lm.vocab_size} tokens")
        tokenizer = train_demo_tokenizer(training_texts(data, forget=True), recipe.lm.vocab_size)
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        timings["tokenizer"] = time.perf_counter() - t

        # One thread per training process, always: single-threaded CPU kernels give the same bits
        # on every run of a machine (so the cached family is reproducible), and on a small shared
        # machine two one-thread processes beat one two-thread process by far.
        threads = 1
        if workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        lm = recipe.lm
        lm_args = asdict(lm)
        jobs: list[tuple[str, Callable[..., dict[str, Any]], tuple[Any, ...], float]] = []
        t = begin(
            f"target: Llama {lm.num_layers} layers x {lm.hidden_size} on forget + retain text, {lm.epochs} epochs"
        )
        jobs.append(
            (
                "target",
                _job_train,
                (str(tmp / "target"), str(data), str(tmp / "tokenizer"), lm_args, "target", True, threads),
                t,
            )
        )
        t = begin(f"retrain: the same recipe on the retain text only, {lm.epochs} epochs")
        jobs.append(
            (
                "retrain",
                _job_train,
                (str(tmp / "retrain"), str(data), str(tmp / "tokenizer"), lm_args, "retrain", False, threads),
                t,
            )
        )
        run_jobs(jobs)

        jobs = []
        for u in recipe.unlearned:
            s = u.settings
            t = begin(
                f"{u.name}: {s.method}{' + SURE' if s.sure else ''}, lr {s.lr:g}, {s.steps} steps"
                + (f", retain batch {s.retain_batch_size}" if s.retain_batch_size else "")
                + f", {s.dtype} weights"
            )
            jobs.append(
                (u.name, _job_unlearn, (str(tmp / "target"), str(data), str(tmp / u.name), asdict(u), threads), t)
            )
        run_jobs(jobs, unlearned=True)
        wait_ahead()
        shutil.rmtree(tmp / "tokenizer", ignore_errors=True)

        from ..version import __version__

        meta = {
            "recipe": recipe.to_dict(),
            "key": recipe.key(),
            "unlearn_assert": __version__,
            "workers": workers,
            "timings_s": {k: round(v, 1) for k, v in timings.items()},
            "total_s": round(time.perf_counter() - t_all, 1),
            "summaries": summaries,
            "models": {u.name: u.description for u in recipe.unlearned},
        }
        (tmp / FAMILY_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if final.exists():
            if (final / FAMILY_FILE).is_file() and not rebuild:
                shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
                return final
            shutil.rmtree(final)
        try:
            os.replace(tmp, final)
        except OSError:
            if (final / FAMILY_FILE).is_file():
                shutil.rmtree(tmp, ignore_errors=True)
                return final
            raise
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            pool = None
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    say(f"demo family built in {time.perf_counter() - t_all:.0f} s: {final}")
    return final


def resolve_demo(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    recipe: DemoRecipe | None = None,
    progress: Progress | None = None,
    build: bool = True,
    workers: int | None = None,
) -> dict[str, str]:
    """``resolve_demo("npo_klr")`` -> ``{"model", "target", "retrain", "data"}`` directories, building
    the family first if it is not cached (unless ``build=False``, which raises instead).

    ``name`` may also be given as ``"demo:npo_klr"``.
    """
    recipe = (recipe or DEFAULT_RECIPE).validated()
    key = parse_demo_spec(name) if isinstance(name, str) and name.startswith("demo:") else name
    if key not in recipe.names:
        raise ConfigError(
            f"unknown demo model 'demo:{key}'; choose one of " + ", ".join(f"demo:{n}" for n in recipe.names)
        )
    directory = family_dir(recipe, cache_dir)
    if not (directory / FAMILY_FILE).is_file():
        if not build:
            raise UnlearnAssertError(
                f"the demo family is not built yet ({directory}); run 'unlearn-assert demo' to build it"
            )
        directory = build_family(recipe, cache_dir, progress=progress, workers=workers)
    return model_paths(directory, key)


def model_paths(directory: Path, name: str) -> dict[str, str]:
    """The ``{"model", "target", "retrain", "data"}`` directories of model ``name`` in a family directory (the
    built family, or its build directory while it is being built)."""
    return {"model": str(directory / name), **{k: str(directory / k) for k in ("target", "retrain", "data")}}


def small_recipe(**lm_overrides: Any) -> DemoRecipe:
    """A seconds-fast recipe (tiny corpus and model) for tests; same structure as the default."""
    lm = replace(
        LMRecipe(
            vocab_size=300,
            hidden_size=32,
            intermediate_size=64,
            num_layers=1,
            num_heads=2,
            epochs=1,
            batch_size=4,
            seq_len=64,
        ),
        **lm_overrides,
    )
    corpus = CorpusSpec(n_forget=4, n_retain=12, n_holdout=4, n_retain_qa=4, n_icl=2)
    plain, sure = DEFAULT_UNLEARNED
    unlearned = (
        replace(plain, settings=replace(plain.settings, steps=2, max_length=32, batch_size=2)),
        replace(sure, settings=replace(sure.settings, steps=2, max_length=32, batch_size=2, sure_batches=1)),
    )
    return DemoRecipe(corpus=corpus, lm=lm, unlearned=unlearned)
