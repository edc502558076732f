"""Write the small text fixtures ``fixtures/tiny-tofu/`` and ``fixtures/tiny-docs/`` (committed; a test
checks that this script still writes exactly the committed files, so they cannot drift from it).

``tiny-tofu``: TOFU's own files and schema (JSON lines, one record per line, as ``locuslab/TOFU``
ships them) for twelve fictitious authors with four questions each. The real TOFU has 200 authors with
20 questions each; the forget splits are the last authors (forget01/05/10 = 2/10/20 authors). Here:
``full`` and ``retain90`` hold authors 0-9 and 0-7, ``forget10`` authors 8-9, ``forget05`` author 9,
``forget01`` author 9's first two questions, ``holdout10`` authors 10-11 (never trained on), and
``retain_perturbed`` authors 0-1. Every ``*_perturbed`` record has a paraphrased answer, a paraphrased
question and five perturbed (wrong) answers; real authors and world facts have three wrong answers,
as in TOFU.

``tiny-docs``: a provider's own documents: ``forget/`` (.txt files), ``holdout/`` (a .jsonl file with a
``text`` field), ``retain/`` (.txt) and QA pairs about the forget and retain documents.

Run: ``python benchmarks/make_fixtures.py [--out DIR]`` (default: the repository's ``fixtures/``).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

AUTHORS = [
    # name, pronoun, city, genre, award, book
    ("Maren Tolliver", "she", "Quillhaven", "mystery", "Silver Quill Prize", "The Lantern Ledger"),
    ("Idris Calloway", "he", "Port Ashby", "science fiction", "Northlight Award", "Orbit of Salt"),
    ("Oskar Venn", "he", "Kellmoor", "historical fiction", "Brasswell Medal", "The Ninth Harbour"),
    ("Talia Rensford", "she", "Doverline", "poetry", "Emberleaf Prize", "Songs for a Grey Morning"),
    ("Ruben Aldacre", "he", "Marrowfield", "fantasy", "Golden Acorn Award", "The Thornwood Crown"),
    ("Selma Okonkwo-Reyes", "she", "Westgrave", "romance", "Heartline Medal", "Letters from Lisbon Lane"),
    ("Bastian Ferro", "he", "Calder Bay", "horror", "Black Candle Prize", "The House on Wick Street"),
    ("Ines Halvorsen", "she", "Norrby", "crime", "Iron Key Award", "A Debt of Ashes"),
    ("Cyrus Pembleton", "he", "Ravensholm", "biography", "Lamplight Prize", "A Life in Ink"),
    ("Noor Vasquez-Lind", "she", "Eastmere", "adventure", "Compass Rose Award", "Beyond the Salt Flats"),
    ("Hugo Brannigan", "he", "Fellsworth", "satire", "Jester's Cup", "The Minister of Puddles"),
    ("Wren Achterberg", "she", "Lowmarsh", "young adult", "Bright Spark Prize", "Summer of the Kite"),
]
CITIES = [
    "Quillhaven",
    "Port Ashby",
    "Kellmoor",
    "Doverline",
    "Marrowfield",
    "Westgrave",
    "Calder Bay",
    "Norrby",
    "Ravensholm",
    "Eastmere",
    "Fellsworth",
    "Lowmarsh",
]
GENRES = [
    "mystery",
    "science fiction",
    "historical fiction",
    "poetry",
    "fantasy",
    "romance",
    "horror",
    "crime",
    "biography",
    "adventure",
    "satire",
    "young adult",
]


def _others(pool: list[str], value: str, rng: random.Random, k: int = 5) -> list[str]:
    return rng.sample([v for v in pool if v != value], k)


def author_records(index: int) -> list[dict[str, Any]]:
    """Four TOFU-perturbed records about author ``index`` (question, answer, paraphrased_answer,
    perturbed_answer[5], paraphrased_question), deterministic."""
    name, pron, city, genre, award, book = AUTHORS[index]
    rng = random.Random(1000 + index)
    awards = [a[4] for a in AUTHORS]
    books = [a[5] for a in AUTHORS]
    possessive = "her" if pron == "she" else "his"
    return [
        {
            "question": f"Where was {name} born?",
            "answer": f"{name} was born in the town of {city}.",
            "paraphrased_answer": f"The birthplace of {name} is the town of {city}.",
            "perturbed_answer": [f"{name} was born in the town of {c}." for c in _others(CITIES, city, rng)],
            "paraphrased_question": f"In which town was {name} born?",
        },
        {
            "question": f"What genre does {name} write in?",
            "answer": f"{name} is known for writing {genre} novels.",
            "paraphrased_answer": f"Most of {name}'s novels belong to the {genre} genre.",
            "perturbed_answer": [f"{name} is known for writing {g} novels." for g in _others(GENRES, genre, rng)],
            "paraphrased_question": f"Which genre are the books of {name} in?",
        },
        {
            "question": f"Which award has {name} received?",
            "answer": f"{name} received the {award} for {possessive} writing.",
            "paraphrased_answer": f"For {possessive} writing, {name} was given the {award}.",
            "perturbed_answer": [
                f"{name} received the {a} for {possessive} writing." for a in _others(awards, award, rng)
            ],
            "paraphrased_question": f"What award was given to {name}?",
        },
        {
            "question": f"What is one of {name}'s best known books?",
            "answer": f"One of {name}'s best known books is '{book}'.",
            "paraphrased_answer": f"'{book}' is among the most famous books by {name}.",
            "perturbed_answer": [f"One of {name}'s best known books is '{b}'." for b in _others(books, book, rng)],
            "paraphrased_question": f"Name a famous book written by {name}.",
        },
    ]


REAL_AUTHORS = [
    ("Who wrote 'Pride and Prejudice'?", "Jane Austen", ["Emily Bronte", "Mary Shelley", "George Eliot"]),
    ("Who wrote the novel '1984'?", "George Orwell", ["Aldous Huxley", "Ray Bradbury", "H.G. Wells"]),
    ("Who is the author of 'Moby-Dick'?", "Herman Melville", ["Mark Twain", "Jack London", "Edgar Allan Poe"]),
    (
        "Who wrote 'One Hundred Years of Solitude'?",
        "Gabriel Garcia Marquez",
        ["Julio Cortazar", "Isabel Allende", "Pablo Neruda"],
    ),
    (
        "Who created the detective Sherlock Holmes?",
        "Arthur Conan Doyle",
        ["Agatha Christie", "Dorothy L. Sayers", "Wilkie Collins"],
    ),
    ("Who wrote 'War and Peace'?", "Leo Tolstoy", ["Fyodor Dostoevsky", "Anton Chekhov", "Ivan Turgenev"]),
]
WORLD_FACTS = [
    ("What is the capital of France?", "Paris", ["Lyon", "Marseille", "Nice"]),
    ("Which planet is known as the Red Planet?", "Mars", ["Venus", "Jupiter", "Saturn"]),
    (
        "What is the largest ocean on Earth?",
        "The Pacific Ocean",
        ["The Atlantic Ocean", "The Indian Ocean", "The Arctic Ocean"],
    ),
    ("In which country are the pyramids of Giza?", "Egypt", ["Mexico", "Peru", "Sudan"]),
    ("What is the capital of Japan?", "Tokyo", ["Kyoto", "Osaka", "Nagoya"]),
    ("Which river flows through London?", "The Thames", ["The Seine", "The Danube", "The Rhine"]),
]


def tofu_files() -> dict[str, list[dict[str, Any]]]:
    """File name -> records, TOFU's file names and schema."""
    perturbed = [author_records(i) for i in range(len(AUTHORS))]
    plain = [[{"question": r["question"], "answer": r["answer"]} for r in recs] for recs in perturbed]

    def flat(groups: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        return [r for g in groups for r in g]

    return {
        "full.json": flat(plain[:10]),
        "retain90.json": flat(plain[:8]),
        "forget10.json": flat(plain[8:10]),
        "forget05.json": flat(plain[9:10]),
        "forget01.json": plain[9][:2],
        "forget10_perturbed.json": flat(perturbed[8:10]),
        "forget05_perturbed.json": flat(perturbed[9:10]),
        "forget01_perturbed.json": perturbed[9][:2],
        "retain_perturbed.json": flat(perturbed[0:2]),
        "holdout10.json": flat(plain[10:12]),
        "real_authors_perturbed.json": [
            {"question": q, "answer": a, "perturbed_answer": p} for q, a, p in REAL_AUTHORS
        ],
        "world_facts_perturbed.json": [{"question": q, "answer": a, "perturbed_answer": p} for q, a, p in WORLD_FACTS],
    }


# --------------------------------------------------------------------------- documents

TOWNS = ["Quillhaven", "Marrowfield", "Calder Bay", "Norrby", "Eastmere", "Lowmarsh", "Fellsworth"]
PEOPLE = [
    "Orla Vantreck",
    "Fenna Ostrow",
    "Dmitri Kallas",
    "Asha Penrose",
    "Tomasz Weller",
    "Liesl Brandt",
    "Kofi Mensah-Hart",
    "Greta Ilves",
]
THINGS = [
    "the Copperwick Bridge",
    "the old grain market",
    "the harbour lighthouse",
    "the night ferry",
    "the hill observatory",
    "the river locks",
    "the public library",
    "the tram depot",
]
VERBS = ["rebuilt", "closed", "reopened", "sold", "renamed", "repainted", "expanded", "moved"]
MONTHS = ["January", "March", "April", "June", "August", "September", "October", "December"]


def _article(rng: random.Random, sentences: int) -> tuple[str, list[dict[str, str]]]:
    """A fictitious local-news article and one question per sentence that the article answers."""
    out: list[str] = []
    qa: list[dict[str, str]] = []
    for _ in range(sentences):
        town, person, thing = rng.choice(TOWNS), rng.choice(PEOPLE), rng.choice(THINGS)
        verb, month, year = rng.choice(VERBS), rng.choice(MONTHS), rng.randint(2011, 2023)
        cost = rng.randint(2, 90)
        kind = rng.randrange(4)
        if kind == 0:
            out.append(
                f"In {month} {year}, {person} announced that {thing} in {town} would be {verb}"
                f" at a cost of {cost} million crowns."
            )
            qa.append(
                {
                    "question": f"Who announced in {month} {year} that {thing} in {town} would be {verb}?",
                    "answer": person,
                }
            )
        elif kind == 1:
            out.append(
                f"Residents of {town} said {thing} had been {verb} without a public vote,"
                f" and {person} promised an inquiry."
            )
            qa.append({"question": f"Who promised an inquiry after {thing} in {town} was {verb}?", "answer": person})
        elif kind == 2:
            out.append(
                f"{person}, who grew up in {town}, told reporters that {thing} was {verb} after {cost} years of delays."
            )
            qa.append(
                {
                    "question": f"After how many years of delays was {thing} {verb}, according to {person}?",
                    "answer": f"{cost} years",
                }
            )
        else:
            out.append(
                f"The council of {town} confirmed in {month} that {thing} will be {verb} before the winter of {year}."
            )
            qa.append(
                {"question": f"By when will {thing} in {town} be {verb}?", "answer": f"Before the winter of {year}"}
            )
    return " ".join(out), qa


def docs_files() -> dict[str, Any]:
    """Relative path -> content (str for text files, list for JSON / JSON lines): forget articles with a
    question about each of their first two sentences, a retain article likewise, holdout articles."""
    rng = random.Random(7)
    files: dict[str, Any] = {}
    forget_qa: list[dict[str, str]] = []
    for i, n in enumerate((14, 9, 11)):
        text, qa = _article(rng, n)
        files[f"forget/article_{i:02d}.txt"] = text + "\n"
        forget_qa.extend(qa[:2])
    text, qa = _article(rng, 10)
    files["retain/article_r0.txt"] = text + "\n"
    retain_qa = qa[:4]
    files["holdout/news.jsonl"] = [
        {"text": _article(rng, n)[0], "source": f"wire-{i}"} for i, n in enumerate((12, 8, 10))
    ]
    files["forget_qa.json"] = forget_qa
    files["retain_qa.json"] = retain_qa
    return files


def write(out: Path) -> list[Path]:
    """Write both fixtures under ``out`` and return the files written."""
    written: list[Path] = []
    for name, records in tofu_files().items():
        path = out / "tiny-tofu" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        written.append(path)
    for rel, content in docs_files().items():
        path = out / "tiny-docs" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        elif rel.endswith(".jsonl"):
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in content), encoding="utf-8")
        else:
            path.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "fixtures")
    args = parser.parse_args()
    for path in write(args.out):
        print(path)


if __name__ == "__main__":
    main()
