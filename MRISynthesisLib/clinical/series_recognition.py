"""Which series of a DICOM study is T1, T1c, T2 or FLAIR, and why: rules on descriptions and acquisition tags.

A study holds more than the four inputs: localizers, reformats, diffusion, perfusion, synthetic
results of this tool, other modalities. Those are ignored first, each with its reason. For the
rest the SeriesDescription (else the ProtocolName) decides when it names one sequence, with the
same name rules as file names (:func:`sequences.guess_sequence`); otherwise the acquisition tags
decide by MR physics:

1. echo-planar (ScanningSequence EP): no verdict (diffusion, perfusion, fMRI look like T2 by TR/TE);
2. inversion recovery (ScanningSequence IR or InversionTime > 0): InversionTime >= 1500 ms with
   RepetitionTime >= 4500 ms nulls fluid: FLAIR; InversionTime 300-1300 ms: T1 (MPRAGE, BRAVO,
   T1-FLAIR); anything else (STIR) no verdict;
3. spin echo: RepetitionTime >= 2000 ms and EchoTime >= 60 ms: T2; RepetitionTime < 1000 ms and
   EchoTime < 30 ms: T1;
4. gradient echo: RepetitionTime < 1000 ms and EchoTime < 10 ms: T1 (spoiled 2D/3D gradient echo;
   T2* and SWI have long echo times).

A T1 series becomes T1c when ContrastBolusAgent is set (scanners keep it on every series after the
injection) or its description has a contrast word, unless the description says pre-contrast.
Tags also break ties when a description names two sequences. Two candidates for one sequence stay
ambiguous (the caller asks the user), except that a Siemens series without distortion correction
(ImageType ND) gives way to its corrected twin.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Dict, Iterable, List, Optional, Tuple

from .. import sequences as names
from ..core.input_checks import SYNTHETIC_MARK
from ..sequences import SEQUENCES, Sequence, candidate_sequences, guess_sequence
from .dicom_study import AcquisitionTags, DicomSeries

__all__ = [
    "Recognition", "recognise", "ignore_reason", "classify", "tag_verdict", "describe_tags",
    "FLAIR_MIN_INVERSION_MS", "FLAIR_MIN_REPETITION_MS", "T1_INVERSION_RANGE_MS", "MIN_VOLUME_IMAGES",
]

#: FLAIR nulls CSF: TI ~ 0.69 x T1 of CSF at long TR (2D: TI 2200-2800 ms, TR 8000-11000 ms; 3D: TI
#: 1650-1900 ms, TR 4800-5000 ms).
FLAIR_MIN_INVERSION_MS = 1500.0
FLAIR_MIN_REPETITION_MS = 4500.0
#: Inversion-prepared T1 (MPRAGE 800-1100 ms, T1-FLAIR 700-1000 ms, GE BRAVO 400-450 ms); STIR is below.
T1_INVERSION_RANGE_MS = (300.0, 1300.0)
#: Spin-echo T2: long TR and long TE.
T2_MIN_REPETITION_MS = 2000.0
T2_MIN_ECHO_MS = 60.0
#: Spin-echo T1: short TR and short TE.
T1_SE_MAX_REPETITION_MS = 1000.0
T1_SE_MAX_ECHO_MS = 30.0
#: Spoiled gradient-echo T1: short TR and very short TE (T2* and SWI use 15-40 ms).
T1_GR_MAX_REPETITION_MS = 1000.0
T1_GR_MAX_ECHO_MS = 10.0
#: Fewer images than this are no brain volume (single shots, screenshots).
MIN_VOLUME_IMAGES = 3

_LOCALIZER_TOKENS = frozenset({"loc", "locs", "localizer", "localiser", "localizers", "localisers", "scout",
                               "survey", "pilot", "tripilot", "3plane", "triplane", "aahead", "aascout"})
#: Series of other contrasts, named in descriptions; each would fit a rule above by its TR/TE alone.
_OTHER_CONTRASTS: Tuple[Tuple[str, str], ...] = (
    ("diffusion", r"dwi|dti|diff|diffusion|adc|tracew?|tensor|dki|b\d{2,4}"),
    ("perfusion", r"perf|perfusion|dsc|dce|asl|pcasl|pasl|cbf|r?cbv|mtt"),
    ("susceptibility", r"swi|swan|t2\*|t2star|hemo|haemo|susceptibility|minip|pha|phase"),
    ("angiography", r"tof|mra|mrv|angio|angiography|venogram|venography"),
    ("functional MRI", r"bold|fmri|rsfmri|resting"),
    ("spectroscopy", r"svs|csi|mrs|spectroscopy|spectro"),
    ("proton density", r"pd|pdw|pdfs|pdtse"),
    ("a parameter map", r"\w*map|mapping|relaxometry"),
)
_SEPARATORS = r"[\s_\-\.()\[\]/\\,:;+]+"


@dataclasses.dataclass
class Recognition:
    """What each series of a study was taken for.

    ``chosen`` and ``reasons`` (one sentence of evidence) per sequence; ``ignored`` series with
    the reason; ``ambiguous`` sequences with their candidates; ``unrecognised`` MR image series
    that no rule placed; ``candidates`` maps every placed series' uid to its sequence and reason
    (chosen or ambiguous), so an ambiguity can be explained too.
    """

    chosen: Dict[Sequence, DicomSeries] = dataclasses.field(default_factory=dict)
    reasons: Dict[Sequence, str] = dataclasses.field(default_factory=dict)
    ignored: List[Tuple[DicomSeries, str]] = dataclasses.field(default_factory=list)
    ambiguous: Dict[Sequence, List[DicomSeries]] = dataclasses.field(default_factory=dict)
    unrecognised: List[DicomSeries] = dataclasses.field(default_factory=list)
    candidates: Dict[str, Tuple[Sequence, str]] = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------- words


def _tokens(text: str) -> List[str]:
    """Lower-case words of a description; ``*`` stays (``T2*`` is not T2), ``+`` separates."""
    return [token for token in re.split(_SEPARATORS, text.lower()) if token]


def _says_native(text: str) -> bool:
    """True when ``text`` has a pre-contrast word ("pre", "native", "w/o"): the words of sequences.py."""
    phrases = {phrase for _, _, phrase in names._phrases(names._tokens(text), 2)}
    return bool(phrases & names._NATIVE_MARKERS)


def _says_contrast(text: str) -> bool:
    """True when ``text`` has a post-contrast word and no pre-contrast word (the words of sequences.py)."""
    return names._says_contrast(text)


def _localizer_words(text: str) -> bool:
    tokens = _tokens(text)
    joined = {a + b for a, b in zip(tokens, tokens[1:])}
    return bool((set(tokens) | joined) & _LOCALIZER_TOKENS) or "localiz" in text.lower()


def _other_contrast(text: str) -> Optional[str]:
    """The kind of non-structural series a description names (diffusion, perfusion, ...), if any."""
    tokens = _tokens(text)
    for kind, pattern in _OTHER_CONTRASTS:
        if any(re.fullmatch(pattern, token) for token in tokens):
            return kind
    return None


# --------------------------------------------------------------------------- tags


def _ms(value: float) -> str:
    return f"{value:g} ms"


def describe_tags(tags: AcquisitionTags) -> str:
    """The recognition tags a series states, for messages: ``ScanningSequence GR; RepetitionTime 30 ms; ...``."""
    parts = []
    if tags.scanning_sequence:
        parts.append("ScanningSequence " + "\\".join(tags.scanning_sequence))
    if tags.acquisition_type:
        parts.append(f"MRAcquisitionType {tags.acquisition_type}")
    for label, value in (("RepetitionTime", tags.repetition_time), ("EchoTime", tags.echo_time),
                         ("InversionTime", tags.inversion_time)):
        if value is not None:
            parts.append(f"{label} {_ms(value)}")
    if tags.contrast_agent:
        parts.append(f"ContrastBolusAgent '{tags.contrast_agent}'")
    return "; ".join(parts) if parts else "no acquisition tags"


def tag_verdict(tags: AcquisitionTags) -> Tuple[Optional[Sequence], str]:
    """T1 (as T1N), T2 or FLAIR by the acquisition physics, or ``None``; with the evidence in words."""
    scanning = set(tags.scanning_sequence)
    tr, te, ti = tags.repetition_time, tags.echo_time, tags.inversion_time
    if "EP" in scanning:
        return None, "echo-planar (ScanningSequence EP): diffusion, perfusion or fMRI, not recognised by tags"
    if "IR" in scanning or (ti is not None and ti > 0):
        if ti is None:
            return None, "inversion recovery without an InversionTime"
        evidence = f"InversionTime {_ms(ti)}" + (f"; RepetitionTime {_ms(tr)}" if tr is not None else "")
        if ti >= FLAIR_MIN_INVERSION_MS and (tr is None or tr >= FLAIR_MIN_REPETITION_MS):
            return Sequence.T2F, f"{evidence} (fluid-nulling inversion: FLAIR)"
        low, high = T1_INVERSION_RANGE_MS
        if low <= ti <= high and (tr is None or tr < FLAIR_MIN_REPETITION_MS):
            kind = "3D " if tags.acquisition_type == "3D" else ""
            return Sequence.T1N, f"{evidence} ({kind}inversion-prepared T1)"
        return None, f"{evidence}: fits neither T1 ({low:g}-{high:g} ms) nor FLAIR (>= {FLAIR_MIN_INVERSION_MS:g} ms)"
    if tr is None or te is None:
        return None, "RepetitionTime or EchoTime not stated"
    evidence = f"RepetitionTime {_ms(tr)}; EchoTime {_ms(te)}"
    if "SE" in scanning:
        if tr >= T2_MIN_REPETITION_MS and te >= T2_MIN_ECHO_MS:
            return Sequence.T2W, f"ScanningSequence SE; {evidence} (long TR and TE: T2)"
        if tr < T1_SE_MAX_REPETITION_MS and te < T1_SE_MAX_ECHO_MS:
            return Sequence.T1N, f"ScanningSequence SE; {evidence} (short TR and TE: T1)"
    elif "GR" in scanning:
        if tr < T1_GR_MAX_REPETITION_MS and te < T1_GR_MAX_ECHO_MS:
            kind = "3D " if tags.acquisition_type == "3D" else ""
            return Sequence.T1N, f"ScanningSequence GR; {evidence} ({kind}spoiled gradient echo: T1)"
    return None, f"{describe_tags(tags)}: no rule matches"


def _same_family(first: Sequence, second: Sequence) -> bool:
    """T1 and T1c share the T1 physics; the tags cannot tell them apart (the contrast agent can)."""
    t1 = (Sequence.T1N, Sequence.T1C)
    return first == second or (first in t1 and second in t1)


# --------------------------------------------------------------------------- one series


def ignore_reason(series: DicomSeries) -> Optional[str]:
    """Why ``series`` is no input candidate, or ``None``. Rules in order: not an MR image, synthetic,
    localizer, derived, another contrast (diffusion, perfusion, ...), several orientations, too few images."""
    if series.modality != "MR":
        return f"modality {series.modality or 'not stated'}, not MR"
    if not series.is_mr_image:
        return f"not an MR image ({series.kind})"
    for field, text in (("SeriesDescription", series.description), ("ProtocolName", series.protocol)):
        if SYNTHETIC_MARK in text.upper():
            return f"{field} '{text}' says {SYNTHETIC_MARK} (made by a synthesis, not acquired)"
    if "LOCALIZER" in series.image_type:
        return "ImageType LOCALIZER"
    for field, text in (("SeriesDescription", series.description), ("ProtocolName", series.protocol)):
        if text and _localizer_words(text):
            return f"{field} '{text}' names a localizer"
    if series.image_type and series.image_type[0] == "DERIVED":
        return f"ImageType {chr(92).join(series.image_type)} (computed from other images, not acquired)"
    for field, text in (("SeriesDescription", series.description), ("ProtocolName", series.protocol)):
        kind = _other_contrast(text)
        if kind:
            return f"{field} '{text}' names {kind}, not T1, T1c, T2 or FLAIR"
    if series.tags.diffusion_b_value:
        return f"DiffusionBValue {series.tags.diffusion_b_value:g}: diffusion, not T1, T1c, T2 or FLAIR"
    if series.orientations > 1:
        return f"its images lie in {series.orientations} orientations (a localizer or a composite), not one volume"
    if series.frames < MIN_VOLUME_IMAGES:
        return f"only {series.frames} image{'s' if series.frames != 1 else ''}: not a volume"
    return None


def _named(series: DicomSeries) -> Tuple[str, str]:
    """(field, text) of the first of SeriesDescription and ProtocolName that names any sequence."""
    for field, text in (("SeriesDescription", series.description), ("ProtocolName", series.protocol)):
        if text and candidate_sequences(text):
            return field, text
    return "SeriesDescription", series.description


def _with_contrast(series: DicomSeries, text: str, parts: List[str]) -> Sequence:
    """T1c when the agent is set (unless the text says pre-contrast) or the text has a contrast word."""
    agent = series.tags.contrast_agent
    if agent and not _says_native(text):
        parts.append(f"ContrastBolusAgent '{agent}'")
        return Sequence.T1C
    if agent:
        parts.append(f"ContrastBolusAgent '{agent}' set, but the description says pre-contrast")
    elif text and _says_contrast(text):
        parts.append(f"'{text}' says post-contrast")
        return Sequence.T1C
    return Sequence.T1N


def classify(series: DicomSeries) -> Optional[Tuple[Sequence, str]]:
    """The sequence an input candidate holds and the evidence, or ``None`` when no rule places it.

    The description wins when it names one sequence (tags that disagree are mentioned); tags decide
    when it names none, and choose among the sequences it names when it names several.
    """
    field, text = _named(series)
    named = guess_sequence(text) if text else None
    physics, evidence = tag_verdict(series.tags)
    if named is not None:
        parts = [f"{field} '{text}'"]
        if named == Sequence.T1N:
            named = _with_contrast(series, text, parts)
        elif named == Sequence.T1C and series.tags.contrast_agent:
            parts.append(f"ContrastBolusAgent '{series.tags.contrast_agent}'")
        if physics is not None and _same_family(physics, named):
            parts.append(evidence)
        elif physics is not None:
            parts.append(f"the tags suggest {physics.short_name} ({evidence}) but the description decides")
        return named, "; ".join(parts)
    if physics is None:
        return None
    found = candidate_sequences(text) if text else set()
    parts = []
    if found:
        if not any(_same_family(physics, other) for other in found):
            return None
        shown = " and ".join(s.short_name for s in SEQUENCES if s in found)
        parts.append(f"{field} '{text}' names {shown}; the tags decide")
    parts.append(evidence)
    sequence = _with_contrast(series, text, parts) if physics == Sequence.T1N else physics
    return sequence, "; ".join(parts)


# --------------------------------------------------------------------------- a study


def _prefer_corrected(candidates: List[DicomSeries], ignored: List[Tuple[DicomSeries, str]]) -> List[DicomSeries]:
    """Drop Siemens series without distortion correction (ImageType ND) when a corrected candidate exists."""
    corrected = [s for s in candidates if "ND" not in s.image_type]
    if not corrected or len(corrected) == len(candidates):
        return candidates
    shown = ", ".join(s.label() for s in corrected)
    for series in candidates:
        if "ND" in series.image_type:
            ignored.append((series, f"ImageType ND (not distortion-corrected); the corrected {shown} is used"))
    return corrected


def recognise(series: Iterable[DicomSeries]) -> Recognition:
    """Place every series: ignored (with why), a candidate for one sequence (with why), or unrecognised."""
    result = Recognition()
    placed: Dict[Sequence, List[DicomSeries]] = {}
    for item in series:
        reason = ignore_reason(item)
        if reason is not None:
            result.ignored.append((item, reason))
            continue
        verdict = classify(item)
        if verdict is None:
            result.unrecognised.append(item)
            continue
        placed.setdefault(verdict[0], []).append(item)
        result.candidates[item.uid] = verdict
    for sequence in SEQUENCES:
        candidates = _prefer_corrected(placed.get(sequence, []), result.ignored)
        if len(candidates) == 1:
            result.chosen[sequence] = candidates[0]
            result.reasons[sequence] = result.candidates[candidates[0].uid][1]
        elif candidates:
            result.ambiguous[sequence] = candidates
    return result
