"""Plugin discovery end to end, with real distributions installed by pip (tests/fixtures/plugin_env.py):

- lamina-demo-plugin (entry point `demo`): a layer, an activation, a loss, a recipe and a command;
- lamina-broken-plugin (`broken`): fails to import;
- lamina-clash-plugin (`clash`): claims the core's layer name "dense";
- lamina-numpy-example (`numpy_example`, docs/examples/numpy-backend): a third-party backend
  with the primitive ops only, run through the conformance suite and a small training.
"""
from __future__ import annotations

import contextvars
import importlib
import subprocess
import sys
import tomllib

import click
import numpy as np
import pytest
from click.testing import CliRunner

import lamina
import lamina.testing
from lamina import plugins
from lamina.backend import load_backend
from lamina.errors import BackendError, UnknownNameError
from lamina.ops import PRIMITIVE_OPS
from lamina.recipes import Recipe, load_recipe
from lamina.registry import get, names

from fixtures import plugin_env

PRIMITIVES = sorted(op.name for op in PRIMITIVE_OPS)

# the broken and clashing fixtures warn on every rediscovery; tests that care catch the warnings
pytestmark = pytest.mark.filterwarnings("ignore::lamina.plugins.PluginWarning")


@pytest.fixture(scope="module", autouse=True)
def installed(tmp_path_factory):
    with plugin_env.activated(plugin_env.install(tmp_path_factory)) as target:
        yield target


@pytest.fixture
def fresh():
    """Rediscover the plugins before and after the test (for tests that change config or add plugins)."""
    plugins.reset()
    yield
    plugins.reset()


def manager():
    return plugins.get_manager()


# ---- the demo plugin -------------------------------------------------------------------------------
def test_demo_plugin_components_are_registered_and_attributed(installed):
    import lamina_demo_plugin
    from lamina_demo_plugin import components

    m = manager()
    info = m.info["demo"]
    assert (info.name, info.version, info.distribution) == ("demo", "0.1.0", "lamina-demo-plugin")
    assert info.hooks == ["lamina_register_commands", "lamina_register_components"]
    for kind, name, obj in (("layers", "scale", components.Scale), ("activations", "swish", components.swish),
                            ("losses", "smoothed_cross_entropy", components.SmoothedCrossEntropy)):
        assert get(kind, name) is obj
        assert m.registry.owner(kind, name) == "demo"
    assert m.registry.owner("recipes", "demo-digits") == "demo"
    assert isinstance(get("recipes", "demo-digits"), Recipe)
    assert {"layer:scale", "activation:swish", "recipe:demo-digits"} <= set(info.registered)
    assert any(item.endswith(":smoothed_cross_entropy") for item in info.registered)
    assert lamina_demo_plugin.__file__.startswith(str(installed))


RECIPE_TOML = """
name = "scaled-swish"

[data]
dataset = "digits"

[model]
layers = [
  { type = "scale", init = 0.5 },
  { type = "dense", n_out = 4, activation = "swish" },
  { type = "dense", n_out = 3 },
]

[loss]
name = "smoothed_cross_entropy"
smoothing = 0.2

[optimizer]
name = "sgd"
lr = 0.1
"""


def test_demo_layer_is_usable_from_a_toml_recipe_file(tmp_path):
    from lamina_demo_plugin.components import Scale, SmoothedCrossEntropy

    path = tmp_path / "scaled.toml"
    path.write_text(RECIPE_TOML)
    recipe = Recipe.from_file(path)
    assert load_recipe(str(path)).model == recipe.model
    lamina.manual_seed(0)
    with lamina.set_default_dtype("float64"):
        model = recipe.build_model(5)
        loss_fn = recipe.build_loss()
        scale = model[0]
        assert isinstance(scale, Scale) and scale.n_in == 5
        np.testing.assert_array_equal(scale.gamma.numpy(), np.full(5, 0.5))
        assert model[1].activation_name == "swish" and model[1].n_in == 5
        assert isinstance(loss_fn, SmoothedCrossEntropy) and loss_fn.smoothing == 0.2

        rng = np.random.default_rng(0)
        X, y = rng.standard_normal((6, 5)), rng.integers(0, 3, 6)
        logits = model(lamina.tensor(X))
        assert logits.shape == (6, 3)
        loss = loss_fn(logits, lamina.tensor(y))
        loss.backward()
        assert scale.gamma.grad.shape == (5,) and np.all(np.abs(scale.gamma.grad.numpy()) > 0)

        optimizer = recipe.build_optimizer(model.parameters())
        before = scale.gamma.numpy().copy()
        optimizer.step()
        np.testing.assert_allclose(scale.gamma.numpy(), before - 0.1 * scale.gamma.grad.numpy())


def test_a_plugins_model_builder_is_named_by_a_recipe_like_a_core_one():
    recipe = Recipe.from_dict({"data": {"dataset": "digits", "images": True}, "model": {"builder": "tiny_cnn",
                                                                                        "filters": 3},
                               "loss": {"name": "softmax_cross_entropy"}, "optimizer": {"name": "adam"},
                               "training": {"epochs": 1}})
    model = recipe.build_model((8, 8, 1))
    assert model(lamina.tensor(np.zeros((2, 8, 8, 1)))).shape == (2, 10)
    assert model[0].W.shape == (3, 3, 1, 3)
    assert manager().registry.owner("models", "tiny_cnn") == "demo"
    assert manager().registry.owner("models", "lenet5") == "lamina"


def test_demo_components_compute_what_their_formulas_say():
    from lamina_demo_plugin.components import Scale, SmoothedCrossEntropy

    rng = np.random.default_rng(1)
    with lamina.set_default_dtype("float64"):
        z = rng.standard_normal((4, 3))
        np.testing.assert_allclose(get("activations", "swish")(lamina.tensor(z)).numpy(), z / (1 + np.exp(-z)))
        assert lamina.gradcheck(lambda t: get("activations", "swish")(t).sum(), [lamina.tensor(z)]).passed

        layer = Scale(3, init=2.0)
        x = rng.standard_normal((4, 3))
        np.testing.assert_allclose(layer(lamina.tensor(x)).numpy(), 2.0 * x)
        assert lamina.gradcheck(lambda: (layer(lamina.tensor(x)) ** 2).sum(), {"gamma": layer.gamma}).passed
        assert lamina.testing.run_layer_test(lambda: Scale(3), (2, 3), expected_output_shape=(2, 3)).gradcheck.passed

        labels = np.array([0, 2, 1, 2])
        targets = np.eye(3)[labels] * 0.9 + 0.1 / 3
        log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        got = SmoothedCrossEntropy(smoothing=0.1)(lamina.tensor(z), lamina.tensor(labels))
        np.testing.assert_allclose(got.item(), -(targets * log_probs).sum() / 4)


def test_demo_recipe_shipped_in_the_package_trains(tmp_path):
    from lamina.run import train_recipe

    recipe = load_recipe("demo-digits").with_overrides(epochs=2)
    results = train_recipe(recipe, tmp_path / "run", progress=False, echo=lambda *a, **k: None)
    assert results["recipe"] == "demo-digits" and results["epochs"] == 2
    assert results["dev_accuracy"] > 0.8
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_demo_command_is_added_to_a_cli_group():
    group = click.Group("lamina")
    manager().register_commands(group)
    assert "demo-hello" in group.commands
    assert "command:demo-hello" in manager().info["demo"].registered
    result = CliRunner().invoke(group, ["demo-hello", "--name", "tests"])
    assert result.exit_code == 0, result.output
    assert result.output == "hello tests, from lamina-demo-plugin (layers: scale; activations: swish)\n"


def test_the_installed_plugins_show_up_in_a_fresh_lamina_process():
    """A new interpreter finds everything through PYTHONPATH and the entry points alone."""
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-c", "from lamina.cli import main; main()", *args], capture_output=True, text=True)
    hello = run("demo-hello")
    assert hello.returncode == 0, hello.stderr
    assert hello.stdout.startswith("hello world, from lamina-demo-plugin")
    listing = run("plugins")
    assert listing.returncode == 0, listing.stderr
    assert "demo 0.1.0 (distribution lamina-demo-plugin)" in listing.stdout
    assert "numpy_example 0.1.0 (distribution lamina-numpy-example)" in listing.stdout
    assert "FAILED broken (distribution lamina-broken-plugin)" in listing.stdout
    assert "lamina_missing_dependency" in listing.stdout
    backends = run("backends")
    assert backends.returncode == 0, backends.stderr
    assert any(line.split()[:2] == ["numpy_example", "yes"] for line in backends.stdout.splitlines())


# ---- failures, duplicates and overrides --------------------------------------------------------------
def test_a_broken_plugin_is_reported_and_everything_else_works(fresh):
    with pytest.warns(plugins.PluginWarning, match="'broken'"):
        m = manager()
    [failure] = [f for f in m.failures if f.name == "broken"]
    assert failure.distribution == "lamina-broken-plugin"
    assert failure.error.startswith("import failed: ModuleNotFoundError")
    assert "lamina_missing_dependency" in failure.error
    assert "broken" not in m.info
    assert {"lamina", "cpu", "demo", "numpy_example"} <= set(m.info)
    assert "scale" in names("layers") and "numpy_example" in m.backends
    lamina.nn.Dense(3, 2)(lamina.tensor(np.ones((1, 3)))).sum()


def test_a_name_registered_twice_is_an_error_naming_both_plugins():
    m = manager()
    [failure] = [f for f in m.failures if f.name == "clash"]
    assert failure.distribution == "lamina-clash-plugin"
    assert "layer 'dense' is registered twice: by plugin 'lamina' and by plugin 'clash'" in failure.error
    assert "override=True" in failure.error
    # the hook's registrations land together or not at all
    assert "clash_extra" not in names("layers")
    assert m.info["clash"].registered == []
    assert get("layers", "dense") is lamina.nn.Dense and m.registry.owner("layers", "dense") == "lamina"


class _Twin:
    """A second plugin that wants the demo plugin's layer name."""

    def __init__(self, override):
        self.override = override

    def replacement(self, n_in):
        return lamina.nn.Dense(n_in, n_in)

    @lamina.hookimpl
    def lamina_register_components(self, register):
        register("layers", "scale", self.replacement, override=self.override)


class _LossTwin:
    @lamina.hookimpl
    def lamina_register_components(self, register):
        register("losses", "smoothed_cross_entropy", lamina.losses.MeanSquaredError)


def test_a_plugin_may_replace_another_plugins_name_only_with_override(fresh):
    from lamina_demo_plugin.components import Scale

    m = manager()
    with pytest.warns(plugins.PluginWarning):
        m.add_plugin(_Twin(override=False), "twin")
    [failure] = [f for f in m.failures if f.name == "twin"]
    assert "layer 'scale' is registered twice: by plugin 'demo' and by plugin 'twin'" in failure.error
    assert get("layers", "scale") is Scale

    with pytest.warns(plugins.PluginWarning):
        m.add_plugin(_LossTwin(), "loss-twin")
    [failure] = [f for f in m.failures if f.name == "loss-twin"]
    assert "loss 'smoothed_cross_entropy' is registered twice: by plugin 'demo' and by plugin 'loss-twin'" \
        in failure.error
    with pytest.raises(UnknownNameError, match="unknown loss 'smoothed'.*Did you mean 'smoothed_cross_entropy'"):
        get("losses", "smoothed")

    twin = _Twin(override=True)
    m.add_plugin(twin, "twin-override")
    assert get("layers", "scale") == twin.replacement
    assert m.registry.owner("layers", "scale") == "twin-override"
    assert "layer:scale" in m.info["twin-override"].registered


class _Typo:
    @lamina.hookimpl
    def lamina_register_layers(self, register):       # no such hook: lamina_register_components is meant
        register("layers", "typo", lamina.nn.Dense)


def test_a_misspelled_hook_is_a_failure_not_silence(fresh):
    m = manager()
    with pytest.warns(plugins.PluginWarning, match="unknown hook 'lamina_register_layers'"):
        m.add_plugin(_Typo(), "typo")
    [failure] = [f for f in m.failures if f.name == "typo"]
    assert "unknown hook 'lamina_register_layers'" in failure.error
    assert "typo" not in m.info and "typo" not in names("layers")


def test_a_second_distribution_claiming_a_plugin_name_is_reported(fresh, monkeypatch, tmp_path):
    """Two entry points named `demo`: the first on sys.path loads, the other is a reported failure."""
    dist_info = tmp_path / "lamina_impostor-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: lamina-impostor\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[lamina]\ndemo = lamina_impostor_is_never_imported\n")
    monkeypatch.setattr(sys, "path", sys.path + [str(tmp_path)])
    importlib.invalidate_caches()
    plugins.reset()
    m = manager()
    [failure] = [f for f in m.failures if f.name == "demo"]
    assert failure.distribution == "lamina-impostor"
    assert failure.error == "not loaded: the plugin name 'demo' is already taken by distribution 'lamina-demo-plugin'"
    assert m.info["demo"].distribution == "lamina-demo-plugin" and "scale" in names("layers")


# ---- disabling ------------------------------------------------------------------------------------------
def _assert_demo_disabled(m):
    assert "demo" in m.disabled and "demo" not in m.info
    assert "scale" not in names("layers") and "demo-digits" not in names("recipes")
    assert "numpy_example" in m.backends          # only the named plugin is left out
    with pytest.raises(UnknownNameError, match="unknown layer 'scale'"):
        get("layers", "scale")
    group = click.Group("lamina")
    m.register_commands(group)
    assert "demo-hello" not in group.commands


def test_disable_a_plugin_with_the_environment(fresh, monkeypatch):
    monkeypatch.setenv("LAMINA_DISABLE_PLUGINS", "demo")
    plugins.reset()
    _assert_demo_disabled(manager())


def test_disable_a_plugin_in_lamina_toml(fresh, monkeypatch, tmp_path):
    (tmp_path / "lamina.toml").write_text('disabled_plugins = ["demo"]\n')
    monkeypatch.chdir(tmp_path)
    plugins.reset()
    _assert_demo_disabled(manager())
    assert lamina.config.resolve().disabled_plugins.source == str(tmp_path / "lamina.toml")


def test_disabling_the_failing_plugins_silences_them(fresh, monkeypatch, recwarn):
    monkeypatch.setenv("LAMINA_DISABLE_PLUGINS", "broken, clash")
    plugins.reset()
    m = manager()
    assert m.failures == []
    assert not [w for w in recwarn if issubclass(w.category, plugins.PluginWarning)]
    assert "demo" in m.info


# ---- the example third-party backend ---------------------------------------------------------------
def test_numpy_example_backend_is_found_and_has_only_the_primitives():
    m = manager()
    assert m.backends["numpy_example"].plugin == "numpy_example"
    assert m.info["numpy_example"].distribution == "lamina-numpy-example"
    assert m.info["numpy_example"].registered == ["backend:numpy_example"]
    backend = load_backend("numpy_example")
    assert sorted(backend.kernels) == PRIMITIVES
    assert backend.missing_primitives() == []
    source = sys.modules[type(backend).__module__].__file__
    assert "lamina.reference" not in open(source).read()
    assert not any(cls.__module__.startswith("lamina.reference") for cls in type(backend).__mro__)


def test_use_backend_selects_the_numpy_example_backend():
    default = lamina.get_backend().name
    with lamina.use_backend("numpy_example") as backend:
        assert backend.name == "numpy_example"
        t = lamina.tensor([1.0, 2.0])
        assert t.backend is backend and lamina.nn.Dense(2, 1).W.backend is backend
    assert lamina.get_backend().name == default

    def select_for_good():
        lamina.use_backend("numpy_example")
        return lamina.get_backend().name

    assert contextvars.copy_context().run(select_for_good) == "numpy_example"
    assert lamina.get_backend().name == default


def test_numpy_example_backend_selected_in_lamina_toml(monkeypatch, tmp_path):
    (tmp_path / "lamina.toml").write_text('backend = "numpy_example"\n')
    monkeypatch.chdir(tmp_path)
    assert lamina.get_backend().name == "numpy_example"
    monkeypatch.setenv("LAMINA_BACKEND", "cpu")
    assert lamina.get_backend().name == "cpu"


def test_an_unavailable_backend_says_why(fresh, monkeypatch):
    monkeypatch.setenv("LAMINA_NUMPY_EXAMPLE_OFF", "1")
    with pytest.raises(BackendError, match=r"backend 'numpy_example' \(from plugin 'numpy_example'\) is not "
                                           r"available: switched off by the environment variable"):
        lamina.use_backend("numpy_example")
    params = lamina.testing.conformance_params(["numpy_example"])
    assert params and all(p.marks and "switched off" in p.marks[0].kwargs["reason"] for p in params)


@pytest.mark.parametrize("dtype", lamina.testing.conformance.DTYPES)
@pytest.mark.parametrize("op_name", lamina.testing.op_names())
def test_numpy_example_conforms(op_name, dtype):
    assert lamina.testing.check_op("numpy_example", op_name, dtype=dtype) >= 1


def test_conformance_params_cover_the_numpy_example_backend():
    """The cases above (collected before the backend is installed) are the ones the suite generates."""
    cases = [p.values[0] for p in lamina.testing.conformance_params(["numpy_example"]) if not p.marks]
    expected = [("numpy_example", op, dtype) for op in lamina.testing.op_names()
                for dtype in lamina.testing.conformance.DTYPES]
    assert sorted(cases) == sorted(expected)
    assert set(PRIMITIVES) < set(lamina.testing.op_names())


def test_a_wrong_kernel_fails_the_conformance_suite():
    """The suite catches a backend whose kernel is wrong (so its passing above means something)."""
    backend = type(load_backend("numpy_example"))(seed=0)
    backend.add_kernel("tanh", lambda x: (np.tanh(x), lambda g: (g * (1 - np.tanh(x)),)))
    with pytest.raises(AssertionError, match="gradient of input 0"):
        lamina.testing.check_op(backend, "tanh")
    with pytest.raises(AssertionError, match="'tanh'"):
        lamina.testing.check_backend(backend, ops=["tanh", "exp"])
    assert lamina.testing.check_backend(load_backend("numpy_example"), ops=["tanh", "exp"]) == 4


def _train(backend_name, state=None, steps=30):
    with lamina.use_backend(backend_name), lamina.set_default_dtype("float64"):
        lamina.manual_seed(0)
        rng = np.random.default_rng(0)
        X = rng.standard_normal((32, 4))
        y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1).astype(np.int64)
        model = lamina.nn.Sequential(lamina.nn.Dense(4, 8, activation="relu"), lamina.nn.Dense(8, 3))
        if state is not None:
            model.load_state_dict(state)
        initial = model.state_dict()
        optimizer = lamina.optim.Adam(model.parameters(), lr=0.05)
        costs = []
        for _ in range(steps):
            optimizer.zero_grad()
            cost = lamina.F.softmax_cross_entropy(model(lamina.tensor(X)), lamina.tensor(y))
            cost.backward()
            optimizer.step()
            costs.append(cost.item())
        assert all(p.backend.name == backend_name for p in model.parameters())
        return initial, costs


def test_a_dense_network_trains_on_the_numpy_example_backend():
    initial, costs = _train("numpy_example")
    assert costs[-1] < 0.5 * costs[0]
    _, cpu_costs = _train("cpu", state=initial)
    np.testing.assert_allclose(costs, cpu_costs, rtol=1e-8)


def test_plugin_layers_run_on_the_third_party_backend():
    recipe = Recipe.from_dict(tomllib.loads(RECIPE_TOML), "scaled.toml")
    with lamina.use_backend("numpy_example"):
        model = recipe.build_model(5)
        cost = recipe.build_loss()(model(lamina.tensor(np.ones((2, 5)))), lamina.tensor(np.array([0, 2])))
        cost.backward()
    assert cost.backend.name == "numpy_example"
    assert model[0].gamma.grad.backend.name == "numpy_example"


def test_the_example_backend_is_pure_numpy_and_compact():
    import lamina_numpy_example.backend

    source = open(lamina_numpy_example.backend.__file__).read()
    imports = {line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports == {"__future__", "os", "numpy", "lamina"}
    assert source.count("@lamina.kernel(") == len(PRIMITIVES)
