"""The commands a newcomer runs on the shipped demo data, as the README shows them: check-data on the whole
demo folder, finetune on it (its train/ cases), predict its test/ case to every output format (outputs named
after the case), evaluate against test/ without renaming anything."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from smp_diffusion_encoder.cli.main import main
from smp_diffusion_encoder.study.demo import DEMO_DATA

TINY = [
    "--method",
    "probe",
    "--encoder",
    "ddpm-ct-tiny",
    "--encoder-weights",
    "none",
    "--image-size",
    "64",
    "--budget",
    "4",
    "--steps",
    "30",
    "--no-progress",
]


def test_check_data_reads_the_demo_as_two_labeled_cases(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-data", str(DEMO_DATA)]) == 0
    out = capsys.readouterr().out
    assert "2 cases (2 labeled), 0 problems" in out
    assert "REALCT_Tr_0001" in out and "REALCT_Ts_0001" in out and "organs (7): Liver" in out


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("demo") / "run"
    assert main(["finetune", str(DEMO_DATA), "--out", str(run), *TINY]) == 0
    split = json.loads((run / "split.json").read_text())
    assert "REALCT_Ts_0001" not in json.dumps(split)  # test/ is held out: finetune trains on train/
    return run / "model"


@pytest.mark.parametrize(
    "fmt, name",
    [
        ("nifti", "REALCT_Ts_0001.nii.gz"),
        ("nrrd", "REALCT_Ts_0001.nrrd"),
        ("mha", "REALCT_Ts_0001.mha"),
        ("dicom-seg", "REALCT_Ts_0001_seg.dcm"),
    ],
)
def test_predict_names_outputs_after_the_case_in_every_format(
    demo_model: Path, tmp_path: Path, fmt: str, name: str
) -> None:
    out = tmp_path / fmt
    assert (
        main(
            [
                "predict",
                str(DEMO_DATA / "test"),
                "--model",
                str(demo_model),
                "--out",
                str(out),
                "--output-format",
                fmt,
                "--no-progress",
            ]
        )
        == 0
    )
    assert [p.name for p in out.iterdir()] == [name]  # the DICOM series only: the label map is not an input
    if fmt == "dicom-seg":
        seg = pydicom.dcmread(out / name)
        source = pydicom.dcmread(next((DEMO_DATA / "test/REALCT_Ts_0001/dicom").iterdir()), stop_before_pixels=True)
        assert seg.StudyInstanceUID == source.StudyInstanceUID != ""
    else:
        csv = tmp_path / "metrics.csv"
        assert main(["evaluate", str(out), str(DEMO_DATA / "test"), "--out", str(csv), "--no-progress"]) == 0
        assert csv.read_text().splitlines()[1].startswith("REALCT_Ts_0001.nii.gz,")
