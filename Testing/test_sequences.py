"""Tests for MRISynthesisLib.sequences: the four sequences and how names map to them.

The expected sequence of each name below is what a radiologist reads from it, written by
hand; none of it is produced by the code under test.
"""
from __future__ import annotations

import pytest

from MRISynthesisLib.sequences import (
    SEQUENCES,
    Sequence,
    UnknownSequenceError,
    candidate_sequences,
    explain_guess,
    guess_sequence,
    parse_sequence,
    sequences_from,
)

T1N, T1C, T2W, T2F = Sequence.T1N, Sequence.T1C, Sequence.T2W, Sequence.T2F

BRATS_NAMES = [
    ("BraTS-GLI-00000-000-t1n.nii.gz", T1N),
    ("BraTS-GLI-00000-000-t1c.nii.gz", T1C),
    ("BraTS-GLI-00000-000-t2w.nii.gz", T2W),
    ("BraTS-GLI-00000-000-t2f.nii.gz", T2F),
    ("BraTS-MEN-01234-001-t2f", T2F),
    ("/data/BraTS2023/BraTS-SSA-00002-000/BraTS-SSA-00002-000-t1c.nii.gz", T1C),
    ("BraTS2021_00000_t1.nii.gz", T1N),
    ("BraTS2021_00000_t1ce.nii.gz", T1C),
    ("BraTS2021_00000_t2.nii.gz", T2W),
    ("BraTS2021_00000_flair.nii.gz", T2F),
    ("BraTS20_Training_001_t1ce.nii", T1C),
    ("C:\\BraTS\\case\\BraTS2021_01666_flair.nii.gz", T2F),
]

SCANNER_NAMES = [
    ("Ax T2 FLAIR", T2F),
    ("AX T2 FLAIR", T2F),
    ("Sag CUBE FLAIR", T2F),
    ("T2_FLAIR", T2F),
    ("T2 FLAIR+C", T2F),  # post-contrast FLAIR is still FLAIR
    ("FLAIR post Gd", T2F),
    ("flair", T2F),
    ("FLAIR", T2F),
    ("sub-01_FLAIR", T2F),
    ("T1 post Gd", T1C),
    ("T1+C", T1C),
    ("T1 C+", T1C),
    ("Ax T1 +C", T1C),
    ("COR T1 +GD", T1C),
    ("3D T1 post contrast", T1C),
    ("Sag T1 MPRAGE +C", T1C),
    ("t1_mprage_tra_Gd", T1C),
    ("T1_MPRAGE_SAG_P2_ISO_POST", T1C),
    ("T1 BRAVO +C", T1C),
    ("AX T1 W/ GAD", T1C),
    ("sub-01_ce-gadolinium_T1w", T1C),
    ("T1GD", T1C),
    ("t1gd", T1C),
    ("T1ce", T1C),
    ("T1CE", T1C),
    ("t1 ce", T1C),
    ("T1c", T1C),
    ("t1_se_tra_KM", T1C),
    ("MPRAGE", T1N),
    ("mprage", T1N),
    ("t1_mprage_sag", T1N),
    ("t1_mprage_sag_p2_iso", T1N),
    ("T1w", T1N),
    ("T1W_3D_TFE", T1N),
    ("sub-01_T1w", T1N),
    ("t1_tse_tra", T1N),
    ("T1 pre contrast", T1N),
    ("AX T1 W/O contrast", T1N),
    ("T1_PRE", T1N),
    ("T2w", T2W),
    ("T2W", T2W),
    ("t2w", T2W),
    ("T2W_TSE", T2W),
    ("t2_tse_tra", T2W),
    ("AX T2 FSE", T2W),
    ("T2-weighted", T2W),
]

NO_SEQUENCE = ["brain", "seg", "BraTS-GLI-00000-000-seg.nii.gz", "DWI", "ADC map", "T2* GRE", "TSE", ""]
TWO_SEQUENCES = ["t2_t1_fusion", "T1/T2", "flair_t1_overlay"]


@pytest.mark.parametrize("name, expected", BRATS_NAMES + SCANNER_NAMES)
def test_guess_sequence_on_typical_names(name, expected):
    assert guess_sequence(name) is expected


@pytest.mark.parametrize("name", NO_SEQUENCE + TWO_SEQUENCES)
def test_guess_sequence_returns_none_without_exactly_one_sequence(name):
    assert guess_sequence(name) is None


def test_candidate_sequences_longer_alias_hides_shorter():
    assert candidate_sequences("BraTS2021_00000_t1ce") == {T1C}
    assert candidate_sequences("Ax T2 FLAIR") == {T2F}
    assert candidate_sequences("t2_t1_fusion") == {T1N, T2W}
    assert candidate_sequences("brain") == set()


def test_explain_guess_for_a_recognised_name():
    text = explain_guess("BraTS2021_00000_t1ce.nii.gz")
    assert "'BraTS2021_00000_t1ce.nii.gz'" in text
    assert "T1 contrast-enhanced (t1c)" in text
    assert "\n" not in text


def test_explain_guess_for_an_ambiguous_name():
    text = explain_guess("t2_t1_fusion")
    assert "ambiguous" in text and "T1" in text and "T2" in text
    assert "\n" not in text


def test_explain_guess_for_a_name_without_sequence():
    assert explain_guess("brain") == "'brain' names none of T1, T1c, T2, FLAIR"


@pytest.mark.parametrize(
    "name, expected",
    [
        ("t1n", T1N), ("T1", T1N), ("t1", T1N), ("T1w", T1N),
        ("t1c", T1C), ("T1c", T1C), ("t1ce", T1C), ("T1 contrast-enhanced", T1C), ("T1+C", T1C),
        ("t2w", T2W), ("T2", T2W), ("t2", T2W),
        ("t2f", T2F), ("FLAIR", T2F), ("flair", T2F), ("T2-FLAIR", T2F), ("t2_flair", T2F),
        (T2F, T2F),
    ],
)
def test_parse_sequence_accepts_suffixes_and_names(name, expected):
    assert parse_sequence(name) is expected


@pytest.mark.parametrize("name", ["dwi", "", "brain", "t1 t2", "BraTS-GLI-00000-000-t1n"])
def test_parse_sequence_refuses_other_names(name):
    with pytest.raises(UnknownSequenceError) as error:
        parse_sequence(name)
    message = str(error.value)
    assert isinstance(error.value, ValueError)
    assert repr(name) in message and "\n" not in message
    for sequence in SEQUENCES:
        assert sequence.value in message


def test_sequence_names_and_order():
    assert [s.value for s in SEQUENCES] == ["t1n", "t1c", "t2w", "t2f"]
    assert [s.short_name for s in SEQUENCES] == ["T1", "T1c", "T2", "FLAIR"]
    assert [s.display_name for s in SEQUENCES] == ["T1", "T1 contrast-enhanced", "T2", "T2-FLAIR"]
    assert [s.brats2021_suffix for s in SEQUENCES] == ["t1", "t1ce", "t2", "flair"]
    assert [s.suffix for s in SEQUENCES] == ["t1n", "t1c", "t2w", "t2f"]
    assert f"{T1C}" == "t1c" and str(T2F) == "t2f"


def test_every_name_of_a_sequence_parses_back_to_it():
    for sequence in SEQUENCES:
        for name in (sequence.value, sequence.display_name, sequence.short_name, sequence.brats2021_suffix):
            assert parse_sequence(name) is sequence
            assert guess_sequence(name) is sequence


def test_sequences_from_keeps_canonical_order_without_duplicates():
    assert sequences_from(["flair", "t1", "T2-FLAIR", "t1ce"]) == [T1N, T1C, T2F]
    assert sequences_from([]) == []
    with pytest.raises(UnknownSequenceError):
        sequences_from(["t1", "pd"])
