"""Text lines for training a general Latin printed-line model with `crnn synth --text`.

    apt-get install wamerican wfrench wngerman wspanish witalian wportuguese
    python bench/make_latin_text.py --out bench-out/latin-lines.txt --count 300000

Words from Debian's word lists of six languages (each line one language, English most often),
with the digits, dates, amounts, codes and symbols printed lines carry. Two kinds of line:
- `paragraph_line` (two in three): a window cut from a run of made-up sentences, as a line of
  a printed paragraph is: sentence ends and capitals mid-line, commas, parentheses, quotes,
  list markers and abbreviations where prose puts them, so the model's left-right context
  learns no false rule (a first version only ended lines with a period, and its model read
  every mid-line ". " as ", ");
- `line` (one in three): 1-8 words in one casing (first word, every word or all capitals),
  as titles, labels and table cells are.
Deterministic for a seed. Only characters of the model's intended alphabet are kept: Latin
letters of those languages, digits, common punctuation and symbols.
"""

from __future__ import annotations

import argparse
import random
import string
import unicodedata
from pathlib import Path

DICTS = {"english": ("/usr/share/dict/american-english", 4), "french": ("/usr/share/dict/french", 1),
         "german": ("/usr/share/dict/ngerman", 1), "spanish": ("/usr/share/dict/spanish", 1),
         "italian": ("/usr/share/dict/italian", 1), "portuguese": ("/usr/share/dict/portuguese", 1)}
LETTERS = string.ascii_letters + "àâäáãåæçèéêëìíîïñòóôöõøùúûüýÿœßÀÂÄÁÃÅÆÇÈÉÊËÌÍÎÏÑÒÓÔÖÕØÙÚÛÜÝŸŒ"
PUNCT = ".,;:!?'\"()-/&%+*@#$€£=[]"
ALPHABET = set(LETTERS + string.digits + PUNCT + " ")


def load_words(path: str) -> list[str]:
    raw = Path(path).read_text(encoding="utf-8", errors="ignore").split("\n")
    words = [unicodedata.normalize("NFC", w.strip()) for w in raw]
    return [w for w in words if 1 <= len(w) <= 16 and set(w) <= ALPHABET and not w.endswith("'s")]


def number(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.3:
        return str(rng.randint(0, 9999))
    if kind < 0.5:
        return f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(1950, 2035)}"
    if kind < 0.7:
        return f"{rng.choice('$€£')}{rng.randint(1, 9999)}.{rng.randint(0, 99):02d}"
    if kind < 0.85:
        return f"{rng.randint(1, 100)}%"
    return "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(rng.randint(3, 8)))


def symbolic(rng: random.Random, words: list[str]) -> str:
    """Tokens with the symbols words never hold: & @ # * + = [ ] /."""
    a, b = rng.choice(words).lower(), rng.choice(words).lower()
    return rng.choice([f"{a} & {b}", f"{a}@{b}.com", f"#{rng.randint(1, 999)}", f"{a}*", f"{rng.randint(1, 99)}+{rng.randint(1, 99)}",
                       f"{a}={rng.randint(0, 999)}", f"[{a}]", f"{a}/{b}", "&", "*", "+", "="])


ABBREVIATIONS = ["e.g.", "i.e.", "etc.", "No.", "Mr.", "Dr.", "St.", "p.", "vs.", "U.S.", "Fig.", "cf.", "approx."]
LIST_MARKERS = ["a)", "b)", "c)", "e)", "(1)", "(2)", "(3)", "(a)", "(ii)", "1.", "2.", "3.", "10.", "-", "*"]


def token(rng: random.Random, words: list[str]) -> str:
    roll = rng.random()
    if roll < 0.08:
        return number(rng)
    if roll < 0.11:
        return symbolic(rng, words)
    if roll < 0.13:
        return rng.choice(ABBREVIATIONS)
    word = rng.choice(words)
    if roll < 0.15:
        return f"{word}-{rng.choice(words).lower()}"
    return word + "'s" if roll < 0.17 else word


def sentence(rng: random.Random, words: list[str]) -> list[str]:
    """One made-up sentence: a capital first, commas, maybe a parenthesis or quote, an end mark."""
    tokens = [token(rng, words) for _ in range(rng.randint(2, 14))]
    for i in range(len(tokens) - 1):
        if rng.random() < 0.1:
            tokens[i] += rng.choice([",", ",", ",", ";", ":", " -"])
    roll, start = rng.random(), rng.randrange(len(tokens))
    end = min(len(tokens), start + rng.randint(1, 4)) - 1
    if roll < 0.15:
        tokens[start], tokens[end] = "(" + tokens[start], tokens[end] + ")"
    elif roll < 0.27:
        quote = rng.choice(['"', '"', "'"])
        tokens[start], tokens[end] = quote + tokens[start], tokens[end] + quote
    tokens[0] = tokens[0][:1].upper() + tokens[0][1:]
    if rng.random() < 0.06:
        tokens.insert(0, rng.choice(LIST_MARKERS))
    tokens[-1] += rng.choice([".", ".", ".", ".", ".", "!", "?", ":", ";", "..."])
    return tokens


def paragraph_line(rng: random.Random, vocab: dict[str, list[str]], weights: list[int]) -> str:
    words = vocab[rng.choices(list(vocab), weights)[0]]
    tokens: list[str] = []
    while len(tokens) < 30:
        tokens += sentence(rng, words)
    at, limit, chosen = rng.randrange(len(tokens) - 12), rng.randint(12, 72), []
    while at < len(tokens) and len(" ".join([*chosen, tokens[at]])) <= limit:
        chosen.append(tokens[at])
        at += 1
    text = " ".join(chosen or [tokens[at][:limit]])
    return "".join(c for c in text if c in ALPHABET).strip()


def line(rng: random.Random, vocab: dict[str, list[str]], weights: list[int]) -> str:
    words = vocab[rng.choices(list(vocab), weights)[0]]
    tokens = [token(rng, words) for _ in range(rng.randint(1, 8))]
    style = rng.random()
    if style < 0.4:
        tokens[0] = tokens[0][:1].upper() + tokens[0][1:]
    elif style < 0.5:
        tokens = [t.upper() for t in tokens]
    elif style < 0.6:
        tokens = [t[:1].upper() + t[1:] for t in tokens]
    for i in range(len(tokens) - 1):
        if rng.random() < 0.12:
            tokens[i] += rng.choice([",", ",", ";", ":", " -", ")"])
    text = " ".join(tokens)
    if rng.random() < 0.08:
        text = f"({text})" if rng.random() < 0.5 else f'"{text}"'
    if rng.random() < 0.45:
        text += rng.choice([".", ".", ".", "!", "?", ":", "..."])
    return "".join(c for c in text if c in ALPHABET)[:72].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    vocab, weights = {}, []
    for language, (path, weight) in DICTS.items():
        if Path(path).is_file():
            vocab[language] = load_words(path)
            weights.append(weight)
    if not vocab:
        raise SystemExit("no word lists: apt-get install wamerican wfrench wngerman wspanish witalian wportuguese")
    rng = random.Random(args.seed)
    lines = ((paragraph_line if rng.random() < 2 / 3 else line)(rng, vocab, weights) for _ in range(args.count))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(text + "\n" for text in lines if text), encoding="utf-8")


if __name__ == "__main__":
    main()
