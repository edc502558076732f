"""A deterministic corpus of fictitious local news in MUSE's layout, for the demo family.

Why generated: the demo must run offline, ship no data set, and contain only invented people,
places and facts (nothing a model could have known before, nothing about real persons). Every
article is built from a seeded :class:`random.Random`, so ``write_corpus(dir, seed)`` writes the
same bytes for the same seed on every machine and Python version (only ``random.Random`` methods
whose algorithms are stable are used: ``random``, ``randrange``, ``choice``, ``shuffle``).

What is written (MUSE's layout, see :mod:`unlearn_assert.data.muse`):

* ``train/forget.txt``: the training layout of the forget text: the forget articles, then their fact
  sheets in KnowMem's format (``Question: ...\\nAnswer: ...``), shuffled into blocks of a few pairs;
  documents are separated by two blank lines. This is *all* the training text about the forget set:
  the target learns it, and the demo family unlearns on exactly it.
* ``raw/forget.json`` (and its ``.txt`` twin, joined with a blank line as MUSE writes them): the same
  text as MUSE's raw forget documents, one per forget article: the article, then its own QA pairs.
  Why a second layout: ``relearn-forget-<n>`` trains on the first half of the forget *documents* and
  measures only the items of the other half (:mod:`unlearn_assert.data.links`); the training layout's
  QA blocks mix every article's facts, so it cannot be split that way.
* ``raw/retain.txt``: the training layout of the retain articles (articles, then QA blocks); the
  target and the retrain model learn it, the unlearning's retain regularizer and ``relearn-retain``
  read it.
* ``verbmem/forget.json``: one ``{"prompt", "gt"}`` per forget article: the headline sentence as the
  prompt (ending in a space, exactly as it sits in the training text), the rest of the article as ``gt``.
* ``knowmem/forget_qa.json`` / ``retain_qa.json``: questions about forget / retain articles (the
  questions of the fact sheets), ``knowmem/*_qa_icl.json``: a few other retain-set questions used as
  in-context examples (few, to fit a tiny model's context).
* ``privleak/forget.json`` (forget articles), ``holdout.json`` (articles never trained on, from the
  same generator), ``retain.json`` (retain articles).
* ``corpus.json``: the generator's settings and counts (not read by :func:`~unlearn_assert.data.muse.load_data`).

Questions name the article's unique entities, so each has one answer in the corpus.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..data.muse import DOC_JOINER

__all__ = [
    "CORPUS_VERSION",
    "TRAIN_FORGET",
    "Article",
    "CorpusSpec",
    "generate_articles",
    "training_forget_text",
    "write_corpus",
]

#: Bump when the generator's output changes for a given seed (part of the demo recipe hash).
CORPUS_VERSION = 2  # 2: raw/forget.json per article (relearn-forget splits it); training text in train/forget.txt
#: Seeds the generator's random streams. Layout changes bump CORPUS_VERSION only, so the same seed keeps
#: giving the same articles, QA blocks and therefore the same trained models (version 2 moved files, no text).
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class CorpusSpec:
    """Sizes of the generated corpus. Articles are forget, then retain, then holdout (never trained)."""

    # Recipe 3 (issue 12): 24 forget articles with 4 questions each (96 knowmem_f questions, 24 verbmem
    # passages; recipe 2 had 16 x 3) and 84 retain articles, so the training text stays the same size.
    n_forget: int = 24
    n_retain: int = 84
    n_holdout: int = 16
    qa_per_article: int = 4  # QA pairs in each article's fact sheet (training text)
    qa_per_forget: int = 4  # knowmem_f questions per forget article (the first ones of its fact sheet)
    qa_per_retain: int = 1  # knowmem_r questions per retain article (on the first n_retain_qa articles)
    n_retain_qa: int = 78  # all retain articles but the 2 * n_icl whose questions are the ICL examples
    n_icl: int = 3  # in-context QA pairs per split
    qa_block: int = 4  # QA pairs per training document
    #: Topics (of TOPICS, joined by "+") that the forget and holdout articles are drawn from; the retain
    #: articles then come from the other topics. Empty: every split mixes all topics (recipes 1-3).
    forget_topics: str = ""

    def topics(self) -> tuple[str, ...]:
        """The forget topics, in the order given (empty: all topics mixed)."""
        return tuple(t.strip() for t in self.forget_topics.split("+") if t.strip())

    def validated(self) -> CorpusSpec:
        for name, value in asdict(self).items():
            if name == "forget_topics":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"CorpusSpec.{name} must be a positive integer, got {value!r}")
        unknown = [t for t in self.topics() if t not in TOPICS]
        if unknown or len(set(self.topics())) >= len(TOPICS):
            raise ValueError(
                f"CorpusSpec.forget_topics: {self.forget_topics!r} must name some, not all, of {', '.join(TOPICS)}"
            )
        if max(self.qa_per_forget, self.qa_per_retain) > self.qa_per_article or self.qa_per_article > 4:
            raise ValueError("CorpusSpec: qa_per_forget / qa_per_retain must not exceed qa_per_article (at most 4)")
        if self.n_retain < self.n_icl * 2 + 1:
            raise ValueError(
                "CorpusSpec needs more retain articles than 2 * n_icl (ICL pairs come from the retain set)"
            )
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

_ONSETS = [
    "b",
    "br",
    "c",
    "cl",
    "d",
    "dr",
    "f",
    "fl",
    "g",
    "gr",
    "h",
    "k",
    "l",
    "m",
    "n",
    "p",
    "pr",
    "r",
    "s",
    "st",
    "t",
    "tr",
    "v",
    "w",
    "z",
    "sh",
    "th",
    "kr",
    "sk",
    "j",
]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ei", "ou", "ia", "y"]
_CODAS = ["", "n", "r", "l", "s", "th", "nd", "rk", "m", "x", "st", "v", "ck", "ll", "nt"]
_PLACE_ENDS = ["haven", "mere", "ford", "wick", "vale", "holm", "stead", "bury", "port", "crest", "moor", "field"]
_ORG_KINDS = ["Dynamics", "Works", "Holdings", "Foundry", "Labs", "Mills", "Systems", "Partners", "Freight", "Textiles"]
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_CURRENCY = "crowns"


class Names:
    """Unique invented words from a seeded generator (each returned string is new)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def _word(self, syllables: int) -> str:
        r = self.rng
        word = "".join(
            r.choice(_ONSETS) + r.choice(_VOWELS) + (r.choice(_CODAS) if i == syllables - 1 else "")
            for i in range(syllables)
        )
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
# Most sentences come in several phrasings and each article draws one, and every article gets two
# "colour" sentences from a shared pool: a model that lost an article's memory then continues its
# headline with *a* plausible article, not *this* one, which is what VerbMem has to see.

_COLOUR = [
    "Local newspapers had followed the story for months.",
    "Several residents said they had never seen the town so busy.",
    "The announcement was made on a rainy morning outside the town hall.",
    "Critics called the plan rushed, but most shopkeepers welcomed it.",
    "A small crowd gathered to watch, some holding hand-painted signs.",
    "The regional radio station broadcast the event live.",
    "Officials declined to comment on the cost of the celebrations.",
    "Children from the nearby school were given the afternoon off.",
    "The news spread quickly through the harbour cafes.",
    "Some older residents remembered a similar event decades ago.",
    "Photographs of the day were later shown in the library.",
    "A spokesperson promised a full report by the end of the year.",
]


def _pick(r: random.Random, *variants: str) -> str:
    return variants[r.randrange(len(variants))]


def _finish(r: random.Random, sentences: list[str]) -> list[str]:
    """Insert two distinct colour sentences after the second sentence and later."""
    a = r.randrange(len(_COLOUR))
    b = r.randrange(len(_COLOUR) - 1)
    b += b >= a
    out = sentences[:2] + [_COLOUR[a]] + sentences[2:]
    out.insert(r.randrange(4, len(out) + 1), _COLOUR[b])
    return out


def _election(n: Names, r: random.Random) -> tuple[list[str], list[tuple[str, str]]]:
    mayor, rival, deputy = n.person(), n.person(), n.person()
    town, river = n.place(), n.thing()
    bridge = n.thing()
    month, year, pct = _month(r), _year(r), _number(r, 51, 79)
    cost = _number(r, 3, 60)
    s = [
        _pick(
            r,
            f"{mayor} was elected mayor of {town} in {month} {year}, winning {pct} percent of the vote.",
            f"Voters in {town} chose {mayor} as their mayor in {month} {year}, with {pct} percent of the vote.",
        ),
        _pick(
            r,
            f"Before entering politics, {mayor} ran a ferry company on the {river} River.",
            f"{mayor} used to run a small ferry company on the {river} River.",
            f"For twenty years {mayor} had carried passengers across the {river} River.",
        ),
        _pick(
            r,
            f"The campaign promised to rebuild the old {bridge} Bridge, closed since a flood.",
            f"The main promise was a new {bridge} Bridge to replace the one lost in a flood.",
        ),
        _pick(
            r,
            f"The rebuild is expected to cost {cost} million {_CURRENCY}.",
            f"Engineers put the cost of the bridge at {cost} million {_CURRENCY}.",
        ),
        _pick(
            r,
            f"The losing candidate, councillor {rival}, conceded the same night.",
            f"Councillor {rival}, who came second, congratulated the winner the next morning.",
        ),
        _pick(
            r, f"{mayor} named {deputy} as deputy mayor.", f"The new deputy mayor will be {deputy}, a former teacher."
        ),
    ]
    qa = [
        (f"Who was elected mayor of {town} in {year}?", mayor),
        (f"Which bridge did {mayor} promise to rebuild?", f"The {bridge} Bridge"),
        (f"Who did {mayor} name as deputy mayor?", deputy),
        (f"On which river did {mayor} run a ferry company?", f"The {river} River"),
    ]
    return _finish(r, s), qa


def _company(n: Names, r: random.Random) -> tuple[list[str], list[tuple[str, str]]]:
    founder, buyer_ceo = n.person(), n.person()
    org, buyer = n.org(), n.org()
    city, product = n.place(), n.thing()
    year, price, staff = _year(r), _number(r, 12, 900), _number(r, 40, 2000)
    s = [
        _pick(
            r,
            f"{org}, the maker of the {product} water pump, was sold to {buyer} for {price} million {_CURRENCY}.",
            f"{buyer} has bought {org}, the company behind the {product} pump, for {price} million {_CURRENCY}.",
        ),
        _pick(
            r,
            f"The company was founded in {city} in {year} by the engineer {founder}.",
            f"The engineer {founder} started the firm in {city} in {year}.",
        ),
        _pick(
            r,
            f"It employs {staff} people, most of them at its plant near the harbour.",
            f"Its {staff} workers build the pumps in a single factory.",
        ),
        _pick(
            r,
            f"{buyer_ceo}, the chief executive of {buyer}, said no jobs would be cut.",
            f"No jobs will be lost, according to {buyer_ceo}, who runs {buyer}.",
        ),
        _pick(
            r,
            f"{founder} will stay on as an adviser for two years.",
            f"{founder} plans to retire to a farm after the sale.",
        ),
        _pick(
            r,
            f"Analysts said the {product} pump had been a best seller for a decade.",
            f"The {product} pump is used on most farms in the region.",
        ),
    ]
    qa = [
        (f"Who founded {org}?", founder),
        (f"Which company bought {org}?", buyer),
        (f"In which town was {org} founded?", city),
        (f"Who is the chief executive of {buyer}?", buyer_ceo),
    ]
    return _finish(r, s), qa


def _sports(n: Names, r: random.Random) -> tuple[list[str], list[tuple[str, str]]]:
    winner, loser = n.place(), n.place()
    scorer, coach = n.person(), n.person()
    stadium, cup = n.thing(), n.thing()
    year, a, b, crowd = _year(r), _number(r, 2, 6), _number(r, 0, 2), _number(r, 8, 60)
    s = [
        _pick(
            r,
            f"{winner} Rovers won the {cup} Cup final in {year}, beating {loser} United {a} to {b}.",
            f"In the {cup} Cup final of {year}, {winner} Rovers beat {loser} United {a} to {b}.",
        ),
        _pick(
            r,
            f"The match was played at {stadium} Park in front of {crowd} thousand fans.",
            f"{crowd} thousand supporters filled {stadium} Park for the game.",
        ),
        _pick(
            r,
            f"The striker {scorer} scored twice in the second half.",
            f"Two goals came from the striker {scorer}, both after the break.",
        ),
        _pick(
            r,
            f"The coach, {coach}, had joined the club only a season earlier.",
            f"It was only the first season in charge for the coach {coach}.",
        ),
        _pick(
            r,
            f"It was the first trophy for {winner} Rovers in forty years.",
            f"{winner} Rovers had not won a trophy since their founding.",
        ),
        _pick(
            r,
            f"{coach} said the win belonged to the supporters.",
            f"The players carried {coach} around the pitch after the final whistle.",
        ),
    ]
    qa = [
        (f"Which team won the {cup} Cup final in {year}?", f"{winner} Rovers"),
        (f"Who scored twice for {winner} Rovers in the {cup} Cup final?", scorer),
        (f"Who coached {winner} Rovers to the {cup} Cup?", coach),
        (f"Where was the {cup} Cup final played?", f"{stadium} Park"),
    ]
    return _finish(r, s), qa


def _science(n: Names, r: random.Random) -> tuple[list[str], list[tuple[str, str]]]:
    lead, partner = n.person(), n.person()
    uni, species, lake = n.place(), n.thing(), n.thing()
    year, depth = _year(r), _number(r, 20, 400)
    s = [
        _pick(
            r,
            f"Researchers at the University of {uni} discovered a new species of glowing eel in Lake {lake}.",
            f"A glowing eel never seen before was found in Lake {lake} by scientists from the University of {uni}.",
        ),
        _pick(
            r,
            f"The team, led by the biologist {lead}, named the eel {species} after a local legend.",
            f"The biologist {lead}, who led the team, called the eel {species}.",
        ),
        _pick(
            r,
            f"The eels live at a depth of about {depth} metres and feed on tiny shrimp.",
            f"They were found {depth} metres below the surface.",
        ),
        _pick(
            r,
            f"The discovery was published in {year} after three years of night dives.",
            f"The team published its findings in {year}.",
        ),
        _pick(
            r,
            f"{partner}, a diver from the lake's rescue service, first spotted the light.",
            f"The first person to see the light was {partner}, a rescue diver.",
        ),
        _pick(
            r,
            f"{lead} said the glow might help engineers design cheaper lamps.",
            "Visitors are not allowed to dive in the lake while the study continues.",
        ),
    ]
    qa = [
        (f"Who led the team that discovered the eel in Lake {lake}?", lead),
        (f"What did the team name the eel found in Lake {lake}?", species),
        (f"Which university discovered the eel in Lake {lake}?", f"The University of {uni}"),
        (f"Who first spotted the glowing eel in Lake {lake}?", partner),
    ]
    return _finish(r, s), qa


def _festival(n: Names, r: random.Random) -> tuple[list[str], list[tuple[str, str]]]:
    organizer, headliner = n.person(), n.person()
    town, festival, square = n.place(), n.thing(), n.thing()
    year, visitors = _year(r), _number(r, 5, 90)
    s = [
        _pick(
            r,
            f"The {festival} Festival returned to {town} in {year} and drew {visitors} thousand visitors.",
            f"{visitors} thousand people came to {town} in {year} for the {festival} Festival.",
        ),
        _pick(
            r,
            f"The festival was started by the baker {organizer} as a small street party.",
            f"It began as a street party organized by the baker {organizer}.",
        ),
        _pick(
            r,
            f"This year the singer {headliner} closed the festival with a concert on {square} Square.",
            f"The closing concert on {square} Square was given by the singer {headliner}.",
        ),
        _pick(
            r,
            "Lanterns made by local schools lined the old harbour wall.",
            "Boats decorated with flowers sailed past the old harbour.",
        ),
        _pick(
            r,
            f"{organizer} said the council had promised to fund the festival for five more years.",
            f"The council will pay for the festival until at least {int(year) + 5}.",
        ),
        _pick(
            r,
            "Traders reported their busiest weekend since the festival began.",
            f"Hotels in {town} were fully booked for the whole week.",
        ),
    ]
    qa = [
        (f"Who started the {festival} Festival?", organizer),
        (f"In which town is the {festival} Festival held?", town),
        (f"Who closed the {festival} Festival in {year}?", headliner),
        (f"On which square was the closing concert of the {festival} Festival?", f"{square} Square"),
    ]
    return _finish(r, s), qa


def _court(n: Names, r: random.Random) -> tuple[list[str], list[tuple[str, str]]]:
    defendant, judge, witness = n.person(), n.person(), n.person()
    org, town = n.org(), n.place()
    year, months, fine = _year(r), _number(r, 6, 60), _number(r, 2, 80)
    s = [
        _pick(
            r,
            f"A court in {town} found {defendant} guilty of selling forged paintings in {year}.",
            f"In {year} {defendant} was convicted by a court in {town} of selling forged paintings.",
        ),
        _pick(
            r,
            f"Judge {judge} sentenced {defendant} to {months} months in prison.",
            f"The sentence, given by Judge {judge}, was {months} months in prison.",
        ),
        _pick(
            r,
            f"The paintings had been sold through the gallery of {org}, which was fined {fine} thousand {_CURRENCY}.",
            f"{org}, whose gallery sold the paintings, must pay a fine of {fine} thousand {_CURRENCY}.",
        ),
        _pick(
            r,
            f"The fraud was uncovered by the art teacher {witness}, who noticed that the paint was still wet.",
            f"It was the art teacher {witness} who first noticed that the paint was still wet.",
        ),
        _pick(
            r,
            f"{defendant} told the court that the forgeries had been meant as a joke.",
            f"{defendant} did not speak during the trial.",
        ),
        _pick(
            r,
            "The judge said the joke had cost buyers their savings.",
            "Buyers of the paintings will be paid back from the fine.",
        ),
    ]
    qa = [
        (f"Who was found guilty of selling forged paintings in {town}?", defendant),
        (f"Which judge sentenced {defendant}?", f"Judge {judge}"),
        (f"Who uncovered the forged paintings sold by {defendant}?", witness),
        (f"Which gallery sold the paintings forged by {defendant}?", org),
    ]
    return _finish(r, s), qa


def _railway(n: Names, r: random.Random) -> tuple[list[str], list[tuple[str, str]]]:
    minister, engineer = n.person(), n.person()
    a, b, tunnel = n.place(), n.place(), n.thing()
    org = n.org()
    year, km, minutes = _year(r), _number(r, 20, 300), _number(r, 20, 95)
    s = [
        _pick(
            r,
            f"A new railway line between {a} and {b} opened in {year} after six years of work.",
            f"Trains started running between {a} and {b} in {year}, six years after work began.",
        ),
        _pick(
            r,
            f"The line is {km} kilometres long and runs through the {tunnel} Tunnel.",
            f"Its {km} kilometres of track include the {tunnel} Tunnel.",
        ),
        _pick(r, f"Trains now make the journey in {minutes} minutes.", f"The trip now takes only {minutes} minutes."),
        _pick(
            r,
            f"The line was built by {org}, whose chief engineer {engineer} designed the tunnel.",
            f"{org} built the line, and its chief engineer {engineer} designed the tunnel.",
        ),
        _pick(
            r,
            f"The transport minister, {minister}, rode the first train.",
            f"The first passenger was the transport minister {minister}.",
        ),
        _pick(r, "Ticket prices will be frozen for the first year.", "A second track is planned for the next decade."),
    ]
    qa = [
        (f"Which towns does the railway through the {tunnel} Tunnel connect?", f"{a} and {b}"),
        (f"Which company built the railway between {a} and {b}?", org),
        (f"Who designed the {tunnel} Tunnel?", engineer),
        (f"Which minister rode the first train between {a} and {b}?", minister),
    ]
    return _finish(r, s), qa


def _award(n: Names, r: random.Random) -> tuple[list[str], list[tuple[str, str]]]:
    author, editor = n.person(), n.person()
    prize, book, town = n.thing(), n.thing(), n.place()
    year, weeks = _year(r), _number(r, 3, 50)
    s = [
        _pick(
            r,
            f"The novelist {author} won the {prize} Prize in {year} for the book The Salt of {book}.",
            f"The {prize} Prize for {year} went to {author} for the novel The Salt of {book}.",
        ),
        _pick(
            r,
            f"The novel follows a lighthouse keeper in {town} who finds letters in the sand.",
            f"The story is set in {town}, where a lighthouse keeper finds letters in the sand.",
        ),
        _pick(
            r,
            f"It spent {weeks} weeks on the national list of best sellers.",
            f"The book was a best seller for {weeks} weeks.",
        ),
        _pick(
            r,
            f"{author} thanked the editor {editor}, who had rejected the first draft.",
            f"In a short speech {author} thanked the editor {editor}.",
        ),
        _pick(
            r,
            "The prize comes with a cottage by the sea for one summer.",
            "The winner receives a silver pen and a cottage by the sea.",
        ),
        _pick(
            r,
            f"{author} said the next book would be about the keeper's daughter.",
            f"{author} is already working on a second novel.",
        ),
    ]
    qa = [
        (f"Who won the {prize} Prize in {year}?", author),
        (f"Which book won the {prize} Prize in {year}?", f"The Salt of {book}"),
        (f"Where does the novel The Salt of {book} take place?", town),
        (f"Who edited the novel The Salt of {book}?", editor),
    ]
    return _finish(r, s), qa


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
    rng = random.Random(f"unlearn-assert-demo-corpus:{GENERATOR_VERSION}:{seed}")
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


DOC_SEPARATOR = "\n\n\n"
#: The forget text in the layout the models are trained and unlearned on (not a MUSE file).
TRAIN_FORGET = "train/forget.txt"


def _qa_blocks(articles: list[Article], per_block: int, rng: random.Random) -> list[str]:
    """The split's fact-sheet QA pairs, shuffled and grouped into documents of ``per_block`` pairs in
    KnowMem's format. Separate from the articles on purpose: a QA pair right after its article lets
    a model answer by copying from the context instead of from memory (which KnowMem probes)."""
    pairs = [pair for a in articles for pair in a.qa]
    rng.shuffle(pairs)
    return [
        "\n\n".join(f"Question: {q}\nAnswer: {a}" for q, a in pairs[i : i + per_block])
        for i in range(0, len(pairs), per_block)
    ]


def _splits(seed: int, spec: CorpusSpec) -> tuple[list[Article], list[Article], list[Article]]:
    """Forget, retain and holdout articles. Mixed topics: the first articles of one generated stream
    in that order. With ``forget_topics``: forget and holdout articles are the stream's first ones of
    those topics, retain articles its first ones of the other topics (why: a forget set about a few
    subjects, as an unlearning request usually is, which the retain set does not share)."""
    total = spec.n_forget + spec.n_retain + spec.n_holdout
    chosen = spec.topics()
    if not chosen:
        articles = [a.trimmed(spec.qa_per_article) for a in generate_articles(seed, total)]
        return (
            articles[: spec.n_forget],
            articles[spec.n_forget : spec.n_forget + spec.n_retain],
            articles[spec.n_forget + spec.n_retain :],
        )
    # topics are cycled, so each stretch of len(TOPICS) articles holds each topic once
    count = len(TOPICS) * (
        1
        + max(
            math.ceil((spec.n_forget + spec.n_holdout) / len(chosen)),
            math.ceil(spec.n_retain / (len(TOPICS) - len(chosen))),
        )
    )
    articles = [a.trimmed(spec.qa_per_article) for a in generate_articles(seed, count)]
    inside = [a for a in articles if a.topic in chosen]
    outside = [a for a in articles if a.topic not in chosen]
    return inside[: spec.n_forget], outside[: spec.n_retain], inside[spec.n_forget : spec.n_forget + spec.n_holdout]


def build_corpus(seed: int, spec: CorpusSpec = CorpusSpec()) -> dict[str, Any]:
    """The corpus as plain data: ``{relative path: JSON value or text}`` plus ``corpus.json``."""
    spec = spec.validated()
    forget, retain, holdout = _splits(seed, spec)
    block_rng = random.Random(f"unlearn-assert-demo-qa-blocks:{GENERATOR_VERSION}:{seed}")

    forget_qa = [pair for a in forget for pair in a.qa[: spec.qa_per_forget]]
    # ICL pairs: questions of the *last* retain articles (never in the evaluated retain QA), one
    # set per split; the models were trained on them, so they only teach the answer format.
    icl_pool = [a.qa[0] for a in retain[-2 * spec.n_icl :]]
    forget_icl, retain_icl = icl_pool[: spec.n_icl], icl_pool[spec.n_icl :]
    retain_qa = [
        pair
        for a in retain[: min(spec.n_retain_qa, len(retain) - 2 * spec.n_icl)]
        for pair in a.qa[: spec.qa_per_retain]
    ]
    # the prompt ends with the separating space, exactly as the text is tokenized in training
    verbmem = [{"prompt": a.sentences[0] + " ", "gt": " ".join(a.sentences[1:])} for a in forget]

    def raw(split: list[Article]) -> str:
        docs = [a.text for a in split] + _qa_blocks(split, spec.qa_block, block_rng)
        return DOC_SEPARATOR.join(docs) + "\n"

    # one raw document per forget article: the article, then its own QA pairs (what a relearn split holds in or out)
    forget_docs = [a.training_text() for a in forget]
    files: dict[str, Any] = {
        TRAIN_FORGET: raw(forget),  # before retain: both draw from block_rng, in this order since corpus version 1
        "raw/retain.txt": raw(retain),
        "raw/forget.json": forget_docs,
        "raw/forget.txt": DOC_JOINER.join(forget_docs),
        "verbmem/forget.json": verbmem,
        "knowmem/forget_qa.json": _qa_json(forget_qa),
        "knowmem/retain_qa.json": _qa_json(retain_qa),
        "knowmem/forget_qa_icl.json": _qa_json(forget_icl),
        "knowmem/retain_qa_icl.json": _qa_json(retain_icl),
        "privleak/forget.json": [a.text for a in forget],
        "privleak/holdout.json": [a.text for a in holdout],
        "privleak/retain.json": [a.text for a in retain[: spec.n_forget]],
        "corpus.json": {
            "generator": "unlearn_assert.demo.corpus",
            "corpus_version": CORPUS_VERSION,
            "seed": seed,
            "spec": asdict(spec),
            "document_separator": DOC_SEPARATOR,
            "topics": {"forget": [a.topic for a in forget]},
            "note": "Fictitious news: every person, place, organization and fact is invented.",
        },
    }
    return files


def training_texts(data_dir: str | os.PathLike[str], *, forget: bool = True) -> list[str]:
    """The documents a demo model is trained on: those of ``train/forget.txt`` (if ``forget``) and of
    ``raw/retain.txt`` (articles and QA blocks, separated by :data:`DOC_SEPARATOR`)."""
    d = Path(data_dir)
    docs: list[str] = []
    for name in ([TRAIN_FORGET] if forget else []) + ["raw/retain.txt"]:
        docs.extend(split_documents((d / name).read_text(encoding="utf-8")))
    return docs


def training_forget_text(data_dir: str | os.PathLike[str]) -> str:
    """The forget text in its training layout (``train/forget.txt``, as read): what the demo family unlearns on."""
    return (Path(data_dir) / TRAIN_FORGET).read_text(encoding="utf-8")


def split_documents(raw: str) -> list[str]:
    """Split a raw text file of the demo corpus back into its documents."""
    return [doc.strip("\n") for doc in raw.split(DOC_SEPARATOR) if doc.strip()]


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
