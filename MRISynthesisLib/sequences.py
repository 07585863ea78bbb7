"""The four brain MRI sequences, their BraTS suffixes and the names people give them.

BraTS 2023+ names files ``<case>-t1n.nii.gz`` etc.; BraTS 2021 used ``_t1 _t1ce _t2 _flair``;
scanners and PACS use many more. Everything that turns a file or node name into a
sequence goes through :func:`guess_sequence` so that the rules live in one place.
"""
from __future__ import annotations

import enum
import re
from typing import Callable, Iterable, Mapping, Optional


class Sequence(str, enum.Enum):
    """One of the four structural sequences; the value is the BraTS 2023+ suffix."""

    T1N = "t1n"
    T1C = "t1c"
    T2W = "t2w"
    T2F = "t2f"

    @property
    def suffix(self) -> str:
        """BraTS 2023+ file suffix (``t1n``, ``t1c``, ``t2w``, ``t2f``)."""
        return self.value

    @property
    def display_name(self) -> str:
        """Name shown to radiologists."""
        return DISPLAY_NAMES[self]

    @property
    def short_name(self) -> str:
        """Compact name for node names and table headers (T1, T1c, T2, FLAIR)."""
        return SHORT_NAMES[self]

    @property
    def brats2021_suffix(self) -> str:
        """BraTS 2021 file suffix (``t1``, ``t1ce``, ``t2``, ``flair``)."""
        return BRATS2021_SUFFIXES[self]

    def __str__(self) -> str:  # so f-strings and CLI output show the suffix
        return self.value


#: Canonical order used throughout the project (inputs, reports, tables).
SEQUENCES: tuple[Sequence, ...] = (Sequence.T1N, Sequence.T1C, Sequence.T2W, Sequence.T2F)

#: Intensity-encoding priors (mean, std) of the median brain intensity on the [0, 1] scale,
#: measured on BraSyn 2024 training data (two-stage paper, appendix A.1).
INTENSITY_PRIORS: dict[Sequence, tuple[float, float]] = {
    Sequence.T1N: (0.4332, 0.1003),
    Sequence.T2W: (0.2498, 0.0626),
    Sequence.T2F: (0.3034, 0.1017),
    Sequence.T1C: (0.2404, 0.0623),
}

DISPLAY_NAMES: dict[Sequence, str] = {
    Sequence.T1N: "T1",
    Sequence.T1C: "T1 contrast-enhanced",
    Sequence.T2W: "T2",
    Sequence.T2F: "T2-FLAIR",
}

SHORT_NAMES: dict[Sequence, str] = {
    Sequence.T1N: "T1",
    Sequence.T1C: "T1c",
    Sequence.T2W: "T2",
    Sequence.T2F: "FLAIR",
}

BRATS2021_SUFFIXES: dict[Sequence, str] = {
    Sequence.T1N: "t1",
    Sequence.T1C: "t1ce",
    Sequence.T2W: "t2",
    Sequence.T2F: "flair",
}

# Aliases, lower case, with separators removed (see _normalise). Order inside a tuple is
# irrelevant; matching picks the longest alias found so that "t1ce" beats "t1".
_ALIASES: dict[Sequence, tuple[str, ...]] = {
    Sequence.T1N: (
        "t1n", "t1", "t1w", "t1weighted", "mprage", "t1native", "t1pre", "t1precontrast",
        "t1nativ", "spgr", "t1mprage", "tfl3d", "bravo",
    ),
    Sequence.T1C: (
        "t1c", "t1ce", "t1gd", "t1post", "t1c+", "t1+c", "t1+gd", "t1contrast", "t1postcontrast",
        "t1wce", "t1wc", "t1wpost", "t1gad", "t1cegd", "t1enhanced", "t1contrastenhanced",
        "mpragepost", "mprage+c", "mpragegd", "t1km", "t1wgd",
    ),
    # No bare "tse"/"fse": Siemens and GE name T1 spin-echo series "t1_tse" too.
    Sequence.T2W: ("t2w", "t2", "t2weighted", "t2tse", "t2fse"),
    Sequence.T2F: (
        "t2f", "flair", "t2flair", "t2wflair", "t2irflair", "flairt2", "t2fl", "darkfluid",
        "t2darkfluid", "irfse",
    ),
}


# Words that mark a T1 series as acquired after contrast ("t1_mprage_tra_Gd", "T1 BRAVO +C",
# BIDS "ce-gadolinium_T1w"), and words that say it was not ("T1 pre contrast", "T1 w/o").
# Matched against single tokens and adjacent token pairs joined (see _phrases).
_CONTRAST_MARKERS = frozenset({
    "+c", "c+", "+gd", "+gad", "gd", "gad", "gado", "gadolinium", "post", "postcontrast",
    "postgd", "contrast", "ce", "km", "enhanced",
})
_NATIVE_MARKERS = frozenset({
    "pre", "precontrast", "native", "nativ", "noncontrast", "nonenhanced", "wo", "without",
})

# Separators people put between words. "*" is not one: "T2*" (gradient-echo T2-star) is a
# different contrast from T2, so it must not be read as "T2".
_SEPARATORS = r"[\s_\-\.()\[\]/\\,:;]+"

#: File endings that :func:`guess_sequence` ignores.
_FILE_EXTENSION = re.compile(r"(\.nii\.gz|\.nii|\.nrrd|\.nhdr|\.mha|\.mhd|\.dcm|\.gz)$", re.I)


class UnknownSequenceError(ValueError):
    """A name that does not identify exactly one of the four sequences."""


def _normalise(text: str) -> str:
    """Lower-case and drop characters that people use as separators (keeps ``+``)."""
    return re.sub(_SEPARATORS, "", text.lower())


def _tokens(text: str) -> list[str]:
    """Split a name into lower-case tokens at separators; ``+`` becomes a token of its own.

    Splitting off ``+`` lets "FLAIR+C" still contain the token "flair" while "T1+C" and
    "T1 C+" rejoin into the aliases "t1+c" / "t1c+".
    """
    spaced = text.lower().replace("+", " + ")
    return [t for t in re.split(_SEPARATORS, spaced) if t]


def _phrases(tokens: list[str], longest: int) -> list[tuple[int, int, str]]:
    """Every run of up to ``longest`` adjacent tokens, joined, with its token span."""
    return [
        (start, stop, "".join(tokens[start:stop]))
        for start in range(len(tokens))
        for stop in range(start + 1, min(len(tokens), start + longest) + 1)
    ]


def parse_sequence(name: str | Sequence) -> Sequence:
    """Return the sequence a short name stands for (suffix, display name or alias).

    Unlike :func:`guess_sequence`, the whole string must be the name (``"T1ce"``,
    ``"flair"``, ``"t2w"``); raises :class:`UnknownSequenceError` otherwise.
    """
    if isinstance(name, Sequence):
        return name
    key = _normalise(str(name))
    for seq in SEQUENCES:
        if key == seq.value or key == _normalise(seq.display_name) or key == _normalise(seq.short_name):
            return seq
        if key in _ALIASES[seq] or key == seq.brats2021_suffix:
            return seq
    known = ", ".join(f"{s.value} ({s.display_name})" for s in SEQUENCES)
    raise UnknownSequenceError(f"unknown sequence name {name!r}; expected one of {known}")


def _strip_extensions(name: str) -> str:
    """Remove image file extensions (.nii.gz, .nrrd, ...) and, for a path, its folders.

    Only a path loses its folders: a file name with an image extension, or a name that
    starts like a path (``/``, ``~``, ``.``, ``C:``). Series descriptions such as
    "AX T1 W/O contrast" keep their slash and every word.
    """
    trimmed = name.rstrip("\\/")
    looks_like_path = bool(_FILE_EXTENSION.search(trimmed)) or bool(re.match(r"([/\\~.]|[A-Za-z]:)", trimmed))
    base = re.split(r"[\\/]", trimmed)[-1] if looks_like_path else trimmed
    return _FILE_EXTENSION.sub("", base)


def candidate_sequences(name: str) -> set[Sequence]:
    """All sequences whose aliases appear in ``name`` as whole tokens or token runs.

    A match on a longer alias hides shorter ones it contains ("t1ce" hides "t1", "t2flair"
    hides "t2"), so the typical names resolve to one sequence.
    """
    tokens = _tokens(_strip_extensions(name))
    if not tokens:
        return set()
    # Every run of up to three adjacent tokens, joined, is a candidate phrase:
    # "T2 FLAIR", "T1 post contrast", "t1_ce" all become one phrase.
    matches: list[tuple[int, int, Sequence]] = []
    for start, stop, phrase in _phrases(tokens, 3):
        for seq in SEQUENCES:
            if phrase in _ALIASES[seq] or phrase == seq.brats2021_suffix:
                matches.append((start, stop, seq))
    # Drop matches whose token span lies inside a longer match's span.
    kept: set[Sequence] = set()
    for start, stop, seq in matches:
        covered = any(
            (s2 <= start and stop <= e2) and (e2 - s2) > (stop - start)
            for s2, e2, other in matches
        )
        if not covered:
            kept.add(seq)
    return kept


def guess_sequence(name: str) -> Sequence | None:
    """Guess the sequence of a file or node name; ``None`` when it is absent or ambiguous.

    ``"BraTS-GLI-00000-000-t1c.nii.gz"`` -> T1C, ``"BraTS2021_00000_flair"`` -> T2F,
    ``"Ax T2 FLAIR"`` -> T2F, ``"T1 post Gd"`` -> T1C, ``"brain"`` -> None,
    ``"t1_t2_fusion"`` -> None (two sequences named).
    """
    found = candidate_sequences(name)
    # "T1 MPRAGE +C", "t1_mprage_tra_Gd": a T1 name with a contrast word is T1c, not both.
    if found == {Sequence.T1N, Sequence.T1C}:
        return Sequence.T1C
    if found == {Sequence.T1N} and _says_contrast(name):
        return Sequence.T1C
    if len(found) == 1:
        return next(iter(found))
    return None


def _says_contrast(name: str) -> bool:
    """True when ``name`` has a post-contrast word and no pre-contrast word."""
    phrases = {phrase for _, _, phrase in _phrases(_tokens(_strip_extensions(name)), 2)}
    return bool(phrases & _CONTRAST_MARKERS) and not phrases & _NATIVE_MARKERS


def explain_guess(name: str) -> str:
    """One line that says what :func:`guess_sequence` decided for ``name`` and why."""
    found = candidate_sequences(name)
    seq = guess_sequence(name)
    if seq is not None:
        return f"{name!r} is {seq.display_name} ({seq.value})"
    if not found:
        return f"{name!r} names none of T1, T1c, T2, FLAIR"
    names = ", ".join(sorted(s.short_name for s in found))
    return f"{name!r} is ambiguous: it names {names}"


def sequences_from(names: Iterable[str | Sequence]) -> list[Sequence]:
    """Parse a list of sequence names, keeping the canonical order and no duplicates."""
    wanted = {parse_sequence(n) for n in names}
    return [s for s in SEQUENCES if s in wanted]


def by_sequence(pairs: Iterable[tuple], unknown: Callable[[object, object, Exception], Exception],
                repeated: Callable[[Sequence, object, object, object], Exception],
                start: Optional[Mapping] = None) -> dict:
    """``{Sequence: value}`` from ``(name, value)`` pairs, every sequence at most once.

    The caller words the errors, because they name different things (a file, an argument):
    ``unknown(name, value, error)`` for a name that is no sequence, ``repeated(sequence, name,
    value, earlier value)`` for a second entry. ``start`` holds entries known already.
    """
    out: dict = dict(start or {})
    for key, value in pairs:
        try:
            sequence = parse_sequence(key)
        except UnknownSequenceError as error:
            raise unknown(key, value, error) from None
        if sequence in out:
            raise repeated(sequence, key, value, out[sequence])
        out[sequence] = value
    return out
