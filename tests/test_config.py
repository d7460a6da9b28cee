"""Config precedence: --backend flag > LAMINA_BACKEND > ./lamina.toml > user file > default."""
import pytest
from click.testing import CliRunner

from lamina import config
from lamina.cli import cli
from lamina.errors import ConfigError


@pytest.fixture
def layered(tmp_path, monkeypatch):
    """A user file and a project file that both set the backend; cwd is the project."""
    xdg = tmp_path / "xdg"
    (xdg / "lamina").mkdir(parents=True)
    (xdg / "lamina" / "config.toml").write_text('backend = "from-user-file"\n')
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.chdir(project)
    return project


def test_default_is_cpu(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = config.resolve()
    assert (settings.backend.value, settings.backend.source) == ("cpu", "default")


def test_each_layer_overrides_the_one_below(layered, monkeypatch):
    assert config.resolve().backend.value == "from-user-file"
    (layered / "lamina.toml").write_text('backend = "from-project"\n')
    assert config.resolve().backend == config.Setting("from-project", str(layered / "lamina.toml"))
    monkeypatch.setenv("LAMINA_BACKEND", "from-env")
    assert config.resolve().backend == config.Setting("from-env", "environment variable LAMINA_BACKEND")
    config.set_flag("backend", "from-flag")
    assert config.resolve().backend == config.Setting("from-flag", "--backend flag")


def test_disabled_plugins_from_env_and_file(layered, monkeypatch):
    (layered / "lamina.toml").write_text('disabled_plugins = ["a", "b"]\n')
    assert config.resolve().disabled_plugins.value == ["a", "b"]
    monkeypatch.setenv("LAMINA_DISABLE_PLUGINS", "c, d")
    assert config.resolve().disabled_plugins.value == ["c", "d"]


def test_unknown_key_and_bad_toml_are_clear_errors(layered):
    (layered / "lamina.toml").write_text('backnd = "cpu"\n')
    with pytest.raises(ConfigError, match="unknown setting 'backnd'.*Did you mean 'backend'"):
        config.resolve()
    (layered / "lamina.toml").write_text('backend = \n')
    with pytest.raises(ConfigError, match="invalid TOML"):
        config.resolve()


def test_config_command_shows_value_and_source(layered, monkeypatch):
    monkeypatch.setenv("LAMINA_BACKEND", "cpu")
    result = CliRunner().invoke(cli, ["config"])
    assert result.exit_code == 0, result.output
    assert "backend = cpu    [environment variable LAMINA_BACKEND]" in result.output
    assert "disabled_plugins = (none)    [default]" in result.output


def test_dask_scheduler_setting(layered, monkeypatch):
    assert config.resolve().dask_scheduler.value == ""
    (layered / "lamina.toml").write_text('dask_scheduler = "tcp://10.0.0.1:8786"\n')
    assert config.resolve().dask_scheduler.value == "tcp://10.0.0.1:8786"
    monkeypatch.setenv("LAMINA_DASK_SCHEDULER", "tcp://127.0.0.1:8786")
    assert config.resolve().dask_scheduler == config.Setting("tcp://127.0.0.1:8786",
                                                             "environment variable LAMINA_DASK_SCHEDULER")
    (layered / "lamina.toml").write_text('dask_scheduler = 8786\n')
    monkeypatch.delenv("LAMINA_DASK_SCHEDULER")
    with pytest.raises(ConfigError, match="'dask_scheduler' must be a string"):
        config.resolve()
