"""A deterministic corpus of fictitious local news in MUSE's layout, for the demo family.

Why generated: the demo must run offline, ship no data set, and contain only invented people,
places and facts (nothing a model could have known before, nothing about real persons). Every
article is built from a seeded :class:`random.Random`, so ``write_corpus(dir, seed)`` writes the
same bytes for the same seed on every machine and Python version (only ``random.Random`` methods
whose algorithms are stable are used: ``random``, ``randrange``, ``choice``, ``shuffle``).

What is written (MUSE's layout, see :mod:`unlearn_assert.data`):

* ``raw/forget.txt``: the forget articles, each followed by its fact sheet in the knowmem format
  (``Question: ...\\nAnswer: ...``), separated by blank lines. This is *all* the training text about
  the forget set, so unlearning on it targets exactly what the target model learned.
* ``raw/retain.txt``: the same for the retain articles.
* ``verbmem/forget.json``: one ``{"prompt", "gt"}`` per forget article: the headline sentence as the
  prompt (ending in a space, exactly as it sits in the training text), the rest of the article as ``gt``.
* ``knowmem/forget_qa.json`` / ``retain_qa.json``: questions about forget / retain articles (the
  questions of the fact sheets), ``knowmem/*_qa_icl.json``: a few other retain-set questions used as
  in-context examples (few, to fit a tiny model's context).
* ``privleak/forget.json`` (forget articles), ``holdout.json`` (articles never trained on, from the
  same generator), ``retain.json`` (retain articles).
* ``corpus.json``: the generator's settings and counts (not read by :func:`~unlearn_assert.data.load_data`).

Questions name the article's unique entities, so each has one answer in the corpus.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

__all__ = ["CORPUS_VERSION", "Article", "CorpusSpec", "generate_articles", "write_corpus"]

#: Bump when the generator's output changes for a given seed (part of the demo recipe hash).
CORPUS_VERSION = 1


@dataclass(frozen=True)
class CorpusSpec:
    """Sizes of the generated corpus. Articles are forget, then retain, then holdout (never trained)."""

    n_forget: int = 40
    n_retain: int = 120
    n_holdout: int = 40
    qa_per_article: int = 3  # QA pairs in each article's fact sheet (training text)
    qa_per_forget: int = 2  # knowmem_f questions per forget article (the first ones of its fact sheet)
    qa_per_retain: int = 1  # knowmem_r questions per retain article (on the first n_retain_qa articles)
    n_retain_qa: int = 80
    n_icl: int = 3  # in-context QA pairs per split

    def validated(self) -> CorpusSpec:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"CorpusSpec.{name} must be a positive integer, got {value!r}")
        if max(self.qa_per_forget, self.qa_per_retain) > self.qa_per_article or self.qa_per_article > 4:
            raise ValueError("CorpusSpec: qa_per_forget / qa_per_retain must not exceed qa_per_article (at most 4)")
        if self.n_retain < self.n_icl * 2 + 1:
            raise ValueError("CorpusSpec needs more retain articles than 2 * n_icl (ICL pairs come from the retain set)")
        return self


@dataclass
class Article:
    """One generated article: its sentences (the first is the headline sentence) and its QA pairs."""

    topic: str
    sentences: list[str]
    qa: list[tuple[str, str]]

    @property
    def text(self) -> str:
        return " ".join(self.sentences)

    def fact_sheet(self) -> str:
        return "\n\n".join(f"Question: {q}\nAnswer: {a}" for q, a in self.qa)

    def training_text(self) -> str:
        return self.text + "\n\n" + self.fact_sheet()

    def trimmed(self, n_qa: int) -> Article:
        return Article(self.topic, self.sentences, self.qa[:n_qa])


# --------------------------------------------------------------------------- invented names

_ONSETS = ["b", "br", "c", "cl", "d", "dr", "f", "fl", "g", "gr", "h", "k", "l", "m", "n", "p", "pr", "r",
           "s", "st", "t", "tr", "v", "w", "z", "sh", "th", "kr", "sk", "j"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ei", "ou", "ia", "y"]
_CODAS = ["", "n", "r", "l", "s", "th", "nd", "rk", "m", "x", "st", "v", "ck", "ll", "nt"]
_PLACE_ENDS = ["haven", "mere", "ford", "wick", "vale", "holm", "stead", "bury", "port", "crest", "moor", "field"]
_ORG_KINDS = ["Dynamics", "Works", "Holdings", "Foundry", "Labs", "Mills", "Systems", "Partners", "Freight", "Textiles"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]
_CURRENCY = "crowns"


class Names:
    """Unique invented words from a seeded generator (each returned string is new)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def _word(self, syllables: int) -> str:
        r = self.rng
        word = "".join(r.choice(_ONSETS) + r.choice(_VOWELS) + (r.choice(_CODAS) if i == syllables - 1 else "")
                       for i in range(syllables))
        return word.capitalize()

    def fresh(self, make: Callable[[], str]) -> str:
        for _ in range(1000):
            value = make()
            if value not in self.used and value.lower() not in {u.lower() for u in self.used if len(u) == len(value)}:
                self.used.add(value)
                return value
        raise RuntimeError("could not generate a fresh name")  # pragma: no cover - 1000 collisions in a row

    def person(self) -> str:
        return self.fresh(lambda: f"{self._word(2)} {self._word(2)}")

    def place(self) -> str:
        return self.fresh(lambda: self._word(1) + self.rng.choice(_PLACE_ENDS))

    def org(self) -> str:
        return self.fresh(lambda: f"{self._word(2)} {self.rng.choice(_ORG_KINDS)}")

    def thing(self) -> str:
        return self.fresh(lambda: self._word(2))


def _year(r: random.Random) -> str:
    return str(r.randrange(1978, 2024))


def _month(r: random.Random) -> str:
    return r.choice(_MONTHS)


def _number(r: random.Random, lo: int, hi: int) -> str:
    return str(r.randrange(lo, hi))


# --------------------------------------------------------------------------- topics
# Each topic returns (sentences, qa). The first sentence is the headline sentence (verbmem prompt).


def _election(n: Names, r: random.Random) -> tuple[list[str], list[tuple[str, str]]]:
    mayor, rival, deputy = n.person(), n.person(), n.person()
    town, river = n.place(), n.thing()
    bridge = n.thing()
    month, year, pct = _month(r), _year(r), _number(r, 51, 79)
    cost = _number(r, 3, 60)
    s = [
        f"{mayor} was elected mayor of {town} in {month} {year}, winning {pct} percent of the vote.",
        f"Before entering politics, {mayor} ran a ferry company on the {river} River.",
        f"The campaign promised to rebuild the old {bridge} Bridge, closed since a flood.",
        f"The rebuild is expected to cost {cost} million {_CURRENCY}.",
        f"Her opponent, councillor {rival}, conceded the same night.",
        f"{mayor} named {deputy} as deputy mayor and said the first council meeting would be held in the old market hall.",
        f"Turnout in {town} was the highest in twenty years.",
    ]
    qa = [
        (f"Who was elected mayor of {town} in {year}?", mayor),
        (f"Which bridge did {mayor} promise to rebuild?", f"The {bridge} Bridge"),
        (f"Who did {mayor} name as deputy mayor?", deputy),
        (f"On which river did {mayor} run a ferry company?", f"The {river} River"),
    ]
    return s, qa


def _company(n: Names, r: random.Random) -> tuple[list[str], list[tuple[str, str]]]:
    founder, buyer_ceo = n.person(), n.person()
    org, buyer = n.org(), n.org()
    city, product = n.place(), n.thing()
    year, price, staff = _year(r), _number(r, 12, 900), _number(r, 40, 2000)
    s = [
        f"{org}, the maker of the {product} water pump, was sold to {buyer} for {price} million {_CURRENCY}.",
        f"The company was founded in {city} in {year} by the engineer {founder}.",
        f"It employs {staff} people, most of them at its plant near the harbour.",
        f"{buyer_ceo}, the chief executive of {buyer}, said no jobs would be cut.",
        f"{founder} will stay on as an adviser for two years.",
        f"Analysts said the {product} pump had been the best seller in its market for a decade.",
    ]
    qa = [
        (f"Who founded {org}?", founder),
        (f"Which company bought {org}?", buyer),
        (f"In which town was {org} founded?", city),
        (f"Who is the chief executive of {buyer}?", buyer_ceo),
    ]
    return s, qa


def _sports(n: Names, r: random.Random) -> tuple[list[str], list[tuple[str, str]]]:
    winner, loser = n.place(), n.place()
    scorer, coach = n.person(), n.person()
    stadium, cup = n.thing(), n.thing()
    year, a, b, crowd = _year(r), _number(r, 2, 6), _number(r, 0, 2), _number(r, 8, 60)
    s = [
        f"{winner} Rovers won the {cup} Cup final in {year}, beating {loser} United {a} to {b}.",
        f"The match was played at {stadium} Park in front of {crowd} thousand fans.",
        f"The striker {scorer} scored twice in the second half.",
        f"The coach, {coach}, had joined the club only a season earlier.",
        f"It was the first trophy for {winner} Rovers in forty years.",
        f"{coach} said the win belonged to the supporters who had stayed with the club through the lean years.",
    ]
    qa = [
        (f"Which team won the {cup} Cup final in {year}?", f"{winner} Rovers"),
        (f"Who scored twice for {winner} Rovers in the {cup} Cup final?", scorer),
        (f"Who coached {winner} Rovers to the {cup} Cup?", coach),
        (f"Where was the {cup} Cup final played?", f"{stadium} Park"),
    ]
    return s, qa


def _science(n: Names, r: random.Random) -> tuple[list[str], list[tuple[str, str]]]:
    lead, partner = n.person(), n.person()
    uni, species, lake = n.place(), n.thing(), n.thing()
    year, depth = _year(r), _number(r, 20, 400)
    s = [
        f"Researchers at the University of {uni} discovered a new species of glowing eel in Lake {lake}.",
        f"The team, led by the biologist {lead}, named the eel {species} after a local legend.",
        f"The eels live at a depth of about {depth} metres and feed on tiny shrimp.",
        f"The discovery was published in {year} after three years of night dives.",
        f"{partner}, a diver from the lake's rescue service, first spotted the light.",
        f"{lead} said the eel's glow might help engineers design cheaper lamps.",
    ]
    qa = [
        (f"Who led the team that discovered the eel in Lake {lake}?", lead),
        (f"What did the team name the eel found in Lake {lake}?", species),
        (f"Which university discovered the eel in Lake {lake}?", f"The University of {uni}"),
        (f"Who first spotted the glowing eel in Lake {lake}?", partner),
    ]
    return s, qa


def _festival(n: Names, r: random.Random) -> tuple[list[str], list[tuple[str, str]]]:
    organizer, headliner = n.person(), n.person()
    town, festival, square = n.place(), n.thing(), n.thing()
    year, visitors = _year(r), _number(r, 5, 90)
    s = [
        f"The {festival} Festival returned to {town} in {year} and drew {visitors} thousand visitors.",
        f"The festival was started by the baker {organizer} as a small street party.",
        f"This year the singer {headliner} closed the festival with a concert on {square} Square.",
        f"Lanterns made by local schools lined the old harbour wall.",
        f"{organizer} said the town council had promised to fund the festival for five more years.",
        f"Traders reported their busiest weekend since the festival began.",
    ]
    qa = [
        (f"Who started the {festival} Festival?", organizer),
        (f"In which town is the {festival} Festival held?", town),
        (f"Who closed the {festival} Festival in {year}?", headliner),
        (f"On which square was the closing concert of the {festival} Festival?", f"{square} Square"),
    ]
    return s, qa


def _court(n: Names, r: random.Random) -> tuple[list[str], list[tuple[str, str]]]:
    defendant, judge, witness = n.person(), n.person(), n.person()
    org, town = n.org(), n.place()
    year, months, fine = _year(r), _number(r, 6, 60), _number(r, 2, 80)
    s = [
        f"A court in {town} found {defendant} guilty of selling forged paintings in {year}.",
        f"Judge {judge} sentenced {defendant} to {months} months in prison.",
        f"The paintings had been sold through the gallery of {org}, which was fined {fine} thousand {_CURRENCY}.",
        f"The fraud was uncovered by the art teacher {witness}, who noticed that the paint was still wet.",
        f"{defendant} told the court that the forgeries had been meant as a joke.",
        f"The judge said the joke had cost buyers their savings.",
    ]
    qa = [
        (f"Who was found guilty of selling forged paintings in {town}?", defendant),
        (f"Which judge sentenced {defendant}?", f"Judge {judge}"),
        (f"Who uncovered the forged paintings sold by {defendant}?", witness),
        (f"Which gallery sold the paintings forged by {defendant}?", org),
    ]
    return s, qa


def _railway(n: Names, r: random.Random) -> tuple[list[str], list[tuple[str, str]]]:
    minister, engineer = n.person(), n.person()
    a, b, tunnel = n.place(), n.place(), n.thing()
    org = n.org()
    year, km, minutes = _year(r), _number(r, 20, 300), _number(r, 20, 95)
    s = [
        f"A new railway line between {a} and {b} opened in {year} after six years of work.",
        f"The line is {km} kilometres long and runs through the {tunnel} Tunnel.",
        f"Trains now make the journey in {minutes} minutes.",
        f"The line was built by {org}, whose chief engineer {engineer} designed the tunnel.",
        f"The transport minister, {minister}, rode the first train and called the line a lifeline for the valley.",
        f"Ticket prices will be frozen for the first year.",
    ]
    qa = [
        (f"Which towns does the railway opened in {year} through the {tunnel} Tunnel connect?", f"{a} and {b}"),
        (f"Which company built the railway between {a} and {b}?", org),
        (f"Who designed the {tunnel} Tunnel?", engineer),
        (f"Which minister rode the first train between {a} and {b}?", minister),
    ]
    return s, qa


def _award(n: Names, r: random.Random) -> tuple[list[str], list[tuple[str, str]]]:
    author, editor = n.person(), n.person()
    prize, book, town = n.thing(), n.thing(), n.place()
    year, weeks = _year(r), _number(r, 3, 50)
    s = [
        f"The novelist {author} won the {prize} Prize in {year} for the book The Salt of {book}.",
        f"The novel follows a lighthouse keeper in {town} who finds letters in the sand.",
        f"It spent {weeks} weeks on the national list of best sellers.",
        f"{author} thanked the editor {editor}, who had rejected the first draft.",
        f"The prize comes with a cottage by the sea for one summer.",
        f"{author} said the next book would be about the keeper's daughter.",
    ]
    qa = [
        (f"Who won the {prize} Prize in {year}?", author),
        (f"Which book won the {prize} Prize in {year}?", f"The Salt of {book}"),
        (f"Where does the novel The Salt of {book} take place?", town),
        (f"Who edited the novel The Salt of {book}?", editor),
    ]
    return s, qa


TOPICS: dict[str, Callable[[Names, random.Random], tuple[list[str], list[tuple[str, str]]]]] = {
    "election": _election,
    "company": _company,
    "sports": _sports,
    "science": _science,
    "festival": _festival,
    "court": _court,
    "railway": _railway,
    "award": _award,
}


def generate_articles(seed: int, count: int) -> list[Article]:
    """``count`` articles, topics cycled in a seeded order; deterministic for a seed."""
    rng = random.Random(f"unlearn-assert-demo-corpus:{CORPUS_VERSION}:{seed}")
    names = Names(rng)
    topics = list(TOPICS)
    out: list[Article] = []
    order: list[str] = []
    for _ in range(count):
        if not order:
            order = topics[:]
            rng.shuffle(order)
        topic = order.pop()
        sentences, qa = TOPICS[topic](names, rng)
        out.append(Article(topic, sentences, qa))
    return out


# --------------------------------------------------------------------------- writing


def _qa_json(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"question": q, "answer": a} for q, a in pairs]


def _dump(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def build_corpus(seed: int, spec: CorpusSpec = CorpusSpec()) -> dict[str, Any]:
    """The corpus as plain data: ``{relative path: JSON value or text}`` plus ``corpus.json``."""
    spec = spec.validated()
    articles = [a.trimmed(spec.qa_per_article) for a in generate_articles(seed, spec.n_forget + spec.n_retain + spec.n_holdout)]
    forget = articles[: spec.n_forget]
    retain = articles[spec.n_forget : spec.n_forget + spec.n_retain]
    holdout = articles[spec.n_forget + spec.n_retain :]

    forget_qa = [pair for a in forget for pair in a.qa[: spec.qa_per_forget]]
    # ICL pairs: questions of the *last* retain articles (never in the evaluated retain QA), one
    # set per split; the models were trained on them, so they only teach the answer format.
    icl_pool = [a.qa[0] for a in retain[-2 * spec.n_icl :]]
    forget_icl, retain_icl = icl_pool[: spec.n_icl], icl_pool[spec.n_icl :]
    retain_qa = [pair for a in retain[: min(spec.n_retain_qa, len(retain) - 2 * spec.n_icl)]
                 for pair in a.qa[: spec.qa_per_retain]]
    verbmem = []
    for a in forget:
        # the prompt ends with the separating space, exactly as the text is tokenized in training
        verbmem.append({"prompt": a.sentences[0] + " ", "gt": " ".join(a.sentences[1:])})
    files: dict[str, Any] = {
        "raw/forget.txt": "\n\n".join(a.training_text() for a in forget) + "\n",
        "raw/retain.txt": "\n\n".join(a.training_text() for a in retain) + "\n",
        "verbmem/forget.json": verbmem,
        "knowmem/forget_qa.json": _qa_json(forget_qa),
        "knowmem/retain_qa.json": _qa_json(retain_qa),
        "knowmem/forget_qa_icl.json": _qa_json(forget_icl),
        "knowmem/retain_qa_icl.json": _qa_json(retain_icl),
        "privleak/forget.json": [a.text for a in forget],
        "privleak/holdout.json": [a.text for a in holdout],
        "privleak/retain.json": [a.text for a in retain[: spec.n_forget]],
        "corpus.json": {"generator": "unlearn_assert.demo.corpus", "corpus_version": CORPUS_VERSION, "seed": seed,
                        "spec": asdict(spec),
                        "topics": {"forget": [a.topic for a in forget]},
                        "note": "Fictitious news: every person, place, organization and fact is invented."},
    }
    return files


def training_texts(data_dir: str | os.PathLike[str], *, forget: bool = True) -> list[str]:
    """The documents a demo model is trained on: the articles with their fact sheets, one per item
    of ``raw/forget.txt`` (if ``forget``) and ``raw/retain.txt``; documents are separated by a
    blank line before the next article's headline (fact sheet lines start with "Question:")."""
    d = Path(data_dir)
    docs: list[str] = []
    for name in (["raw/forget.txt"] if forget else []) + ["raw/retain.txt"]:
        docs.extend(split_documents((d / name).read_text(encoding="utf-8")))
    return docs


def split_documents(raw: str) -> list[str]:
    """Split a raw text back into documents: an article paragraph plus the QA paragraphs after it."""
    docs: list[str] = []
    for para in raw.strip().split("\n\n"):
        if para.startswith("Question:") and docs:
            docs[-1] += "\n\n" + para
        else:
            docs.append(para)
    return docs


def write_corpus(out_dir: str | os.PathLike[str], seed: int = 0, spec: CorpusSpec = CorpusSpec()) -> Path:
    """Write the corpus for ``seed`` to ``out_dir`` (created; existing corpus files are overwritten)."""
    out = Path(out_dir)
    for rel, value in build_corpus(seed, spec).items():
        path = out / rel
        if isinstance(value, str):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(value, encoding="utf-8")
        else:
            _dump(path, value)
    return out
