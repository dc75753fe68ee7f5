"""Docker-style random container names (adjective_surname) and name validation."""

from __future__ import annotations

import os

from isle.errors import ConfigError

__all__ = ["random_name", "check_name"]

_ADJ = ("admiring adoring affectionate agitated amazing angry awesome blissful bold boring brave "
        "busy charming clever cool compassionate competent condescending confident cranky crazy "
        "dazzling determined distracted dreamy eager ecstatic elastic elated elegant eloquent epic "
        "fervent festive flamboyant focused friendly frosty gallant gifted goofy gracious happy "
        "hardcore heuristic hopeful hungry infallible inspiring jolly jovial keen kind laughing "
        "loving lucid magical modest musing mystifying naughty nervous nice nifty nostalgic "
        "objective optimistic peaceful pedantic pensive practical priceless quirky quizzical "
        "relaxed reverent romantic sad serene sharp silly sleepy stoic strange stupefied "
        "suspicious sweet tender thirsty trusting upbeat vibrant vigilant vigorous wizardly "
        "wonderful xenodochial youthful zealous zen").split()
_NOUN = ("albattani allen almeida agnesi archimedes ardinghelli aryabhata austin babbage banach "
         "bardeen bartik bassi beaver bell bhabha bhaskara blackwell bohr booth borg bose boyd "
         "brahmagupta brattain brown carson chandrasekhar clarke colden cori cray curie darwin "
         "davinci dijkstra dubinsky easley edison einstein elion engelbart euclid euler fermat "
         "fermi feynman franklin galileo gates goldberg goldstine goldwasser golick goodall "
         "hamilton hawking heisenberg hermann hodgkin hoover hopper hugle hypatia jackson jang "
         "jennings jepsen johnson joliot jones kalam kapitsa keller kepler khorana kilby kirch "
         "knuth kowalevski lalande lamarr lamport leakey leavitt lewin lichterman liskov lovelace "
         "lumiere mahavira mayer mccarthy mcclintock mclean mcnulty meitner meninsky mestorf "
         "minsky mirzakhani morse murdock napier nash neumann newton nightingale nobel noether "
         "northcutt noyce panini pare pasteur payne perlman pike poincare poitras ptolemy raman "
         "ramanujan ride ritchie roentgen rosalind saha sammet shannon shaw shirley shockley "
         "sinoussi snyder spence stallman stonebraker swanson swartz swirles tesla thompson "
         "torvalds turing varahamihira visvesvaraya volhard wescoff wiles williams wilson wing "
         "wozniak wright yalow yonath").split()

_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_REST = _ALNUM | frozenset("_.-")


def _pick(words: list[str]) -> str:
    """A random word (os.urandom: `random` and `re` cost ~6 ms of every CLI start)."""
    return words[int.from_bytes(os.urandom(4), "little") % len(words)]


def random_name() -> str:
    return f"{_pick(_ADJ)}_{_pick(_NOUN)}"


def check_name(name: str) -> str:
    """Docker's rule: [a-zA-Z0-9][a-zA-Z0-9_.-]+"""
    n = name.lstrip("/")
    if len(n) < 2 or n[0] not in _ALNUM or not _REST.issuperset(n):
        raise ConfigError("--name", f"invalid container name {name!r}: only "
                          "[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed (at least 2 characters)")
    return n
