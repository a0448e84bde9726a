from smp_diffusion_encoder.cli.main import main


def test_resume_with_a_corrupt_run_config_names_the_file(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{ not json")
    code = main(["pretrain", str(tmp_path / "no-data"), "--out", str(run), "--resume", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "config.json" in err and "JSON" in err
