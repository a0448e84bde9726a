from smp_diffusion_encoder.cli.main import main


def test_resume_with_a_corrupt_run_config_names_the_file(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{ not json")
    code = main(["pretrain", str(tmp_path / "no-data"), "--out", str(run), "--resume", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "config.json" in err and "JSON" in err


def test_a_root_without_unlabeled_cases_is_refused_before_anything_is_made(tmp_path, capsys):
    from smp_diffusion_encoder.data.phantom import write_phantom_dataset

    root = write_phantom_dataset(tmp_path / "flare", n_labeled=1, n_unlabeled=0, shape=(4, 32, 32))
    code = main(["pretrain", str(root), "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 2
    assert f"error: DatasetLayoutError: {root}: holds no volume to pretrain on" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_failed_store_build_leaves_no_half_store(tmp_path, monkeypatch):
    import pytest

    from smp_diffusion_encoder.errors import InputFileError
    from smp_diffusion_encoder.training import pretrain

    (tmp_path / "run").mkdir()
    monkeypatch.setattr(pretrain, "source_volumes", lambda data: [tmp_path / "ct.nii.gz"])

    def half_build(volumes, store, *args, **kwargs):
        (store / "shards").mkdir(parents=True)
        raise InputFileError(volumes[0], "cannot be read")

    monkeypatch.setattr("smp_diffusion_encoder.data.slice_store.build_slice_store", half_build)
    with pytest.raises(InputFileError):
        pretrain.prepare_store(tmp_path, tmp_path / "run", 32, progress=False)
    assert list((tmp_path / "run").iterdir()) == []  # the run folder existed: kept, the store removed
