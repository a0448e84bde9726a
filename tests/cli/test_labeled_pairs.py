"""Every command that reads labeled data refuses a label map that does not fit its image, before any work:
exit 2, naming the label file, the image and both shapes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from smp_diffusion_encoder.cli.main import main
from smp_diffusion_encoder.data.phantom import write_phantom_dataset


@pytest.fixture(scope="module")
def short_label_root(tmp_path_factory) -> tuple[Path, Path]:
    """A FLARE root whose second case's label map has 2 slices fewer than its image."""
    root = write_phantom_dataset(tmp_path_factory.mktemp("pairs"), n_labeled=2, n_unlabeled=0, shape=(8, 40, 36))
    label = sorted((root / "Training" / "FLARE22_LabeledCase50" / "labels").glob("*.nii.gz"))[1]
    img = nib.load(label)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[:, :, :-2], img.affine, img.header), label)
    return root, label


@pytest.mark.parametrize(
    "argv",
    [
        ["check-data", "{root}"],
        ["split", "{root}", "--budget", "4", "--out", "{tmp}/out/split.json"],
        [
            "finetune",
            "{root}",
            "--method",
            "probe",
            "--encoder",
            "ddpm-ct-tiny",
            "--encoder-weights",
            "none",
            "--steps",
            "1",
            "--out",
            "{tmp}/out",
            "--no-progress",
        ],
    ],
)
def test_a_label_map_of_another_shape_is_refused(short_label_root, tmp_path, capsys, argv) -> None:
    root, label = short_label_root
    assert main([a.format(root=root, tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    image_name = label.name.replace(".nii.gz", "_0000.nii.gz")
    assert f"error: LabelMismatchError: {label}: is 36x40x6 but image {image_name} is 36x40x8" in err, err
    assert not (tmp_path / "out").exists()
