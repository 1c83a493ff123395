"""Fuzzing run configs (hypothesis, derandomized): random command-line overrides go through Hydra's
compose API, as ``acdc-discover`` composes them, then through ``validate_config``.

Contract: composition fails only with Hydra's or OmegaConf's config errors, or with an error raised
inside Hydra's own code (``acdc-discover`` reports every one of these in one line, see
``acdc_engine.commands.discover.main``); a composed config then passes validation or fails with AcdcError; and a
config that passes is one the run can use: it resolves, and the API's own argument checks accept it.
"""

import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from acdc_engine import AcdcError
from acdc_engine.commands.discover import CONF_DIR, _config_error
from acdc_engine.commands.config_schema import register_configs
from acdc_engine.methods.acdc import check_threshold
from acdc_engine.methods.eap import ig_alphas
from acdc_engine.commands.validation import validate_config

FUZZ = settings(
    derandomize=True, database=None, deadline=None, max_examples=150,  # a Hydra compose takes ~0.15 s
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
GROUPS = {group: sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")) for group in ("model", "task", "method")}


@pytest.fixture(scope="module")
def hydra_context():
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


@pytest.fixture(scope="module")
def known_keys(hydra_context):
    """Every dotted key of the shipped configs, over all group choices, plus some that exist nowhere."""
    keys = {"method.thresh", "model.colour", "task.n_prompt", "x"}
    for group, choices in GROUPS.items():
        for choice in choices:
            cfg = compose("config", overrides=[f"{group}={choice}"])
            keys |= set(dotted_keys(OmegaConf.to_container(cfg, resolve=False)))
    return sorted(keys)


def dotted_keys(container, prefix=""):
    for key, value in container.items():
        yield prefix + key
        if isinstance(value, dict):
            yield from dotted_keys(value, prefix + key + ".")


def float_text(x):
    return {math.inf: "inf", -math.inf: "-inf"}.get(x, "nan" if math.isnan(x) else repr(x))


values = st.one_of(
    st.integers().map(str),
    st.sampled_from([0, -1, 1, 2**63, -(2**63) - 1, 10**30]).map(str),
    st.floats().map(float_text),
    st.sampled_from(["true", "false", "null", "[]", "[1,2]", "{a:1}", "''", "abc", "1e999"]),
    st.sampled_from(["${method.threshold}", "${oc.env:ACDC_FUZZ_UNSET}", "${nope}", "${seed}", "${oc.decode:'[1]'}"]),
    st.text(alphabet="ab1.-_,:[]{}$'\"= ", max_size=8),
)


@st.composite
def override_lists(draw, keys):
    overrides = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.integers(0, 4)) == 0:  # choose a config group
            group = draw(st.sampled_from(sorted(GROUPS)))
            overrides.append(f"{group}={draw(st.sampled_from(GROUPS[group] + ['gpt7', 'null', '']))}")
            continue
        prefix = draw(st.sampled_from(["", "", "", "+", "++", "~"]))
        key = draw(st.sampled_from(keys))
        overrides.append(f"~{key}" if prefix == "~" and draw(st.booleans()) else f"{prefix}{key}={draw(values)}")
    return overrides


def raised_inside_hydra(error):
    """True if the innermost frame of ``error``'s traceback is in Hydra's or OmegaConf's code."""
    frames = [tb.tb_frame for tb in iter_traceback(error.__traceback__)]
    module = Path(frames[-1].f_code.co_filename).parts
    return "hydra" in module or "omegaconf" in module


def iter_traceback(tb):
    while tb is not None:
        yield tb
        tb = tb.tb_next


def assert_usable(cfg):
    """A config that passed validation is one the run can use before (and without) a model."""
    OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # the run records it resolved
    method = cfg.method
    if "threshold" in method:
        check_threshold(method.threshold)
    if "steps" in method:
        ig_alphas(method.steps)
    if "batch_size" in method and method.batch_size is not None:
        assert method.batch_size >= 1
    if "top_n" in method:
        assert (method.top_n is None) != (method.score_threshold is None)


def assert_rejected_with_acdc_error_or_usable(cfg):
    """Validation either refuses ``cfg`` with an AcdcError that says something, or passes a usable config."""
    try:
        validate_config(cfg)
    except AcdcError as error:
        event("validate: AcdcError")
        assert str(error)
        return
    event("valid")
    assert_usable(cfg)


@FUZZ
@given(data=st.data())
def test_random_overrides_fail_only_with_config_errors_or_give_a_usable_config(hydra_context, known_keys, data):
    overrides = data.draw(override_lists(known_keys), label="overrides")
    try:
        cfg = compose("config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as error:
        event(f"compose: {type(error).__name__}")
        assert _config_error(error)
        return
    except Exception as error:  # Hydra's own code raising a plain error on an override it cannot apply
        event(f"compose, inside Hydra: {type(error).__name__}")
        assert raised_inside_hydra(error), f"{type(error).__name__} escaped from outside Hydra: {error}"
        assert _config_error(error).startswith("cannot compose the config from the command line")
        return
    assert_rejected_with_acdc_error_or_usable(cfg)


def typed_value(draw, current):
    """An override value of the same kind as ``current``, of any magnitude or sign (nan, inf, huge)."""
    if isinstance(current, bool):
        return draw(st.sampled_from(["true", "false"]))
    if isinstance(current, int):
        return str(draw(st.integers() | st.sampled_from([0, -1, 2**63, -(2**63) - 1])))
    if isinstance(current, float):
        return float_text(draw(st.floats()))
    return draw(st.sampled_from(["null", "0", "1"]))  # strings, enums, optional values: null or a number


@pytest.fixture(scope="module")
def typed_leaves(hydra_context):
    """{(group, choice): {dotted key: default value}} for the group's own scalar keys, and
    {("root", None): ...} for the top-level ones (seed, device, checkpoint.*); names left out."""
    leaves = {}
    for group, choices in GROUPS.items():
        for choice in choices:
            cfg = OmegaConf.to_container(compose("config", overrides=[f"{group}={choice}"]), resolve=False)
            leaves[group, choice] = dict(leaf_items(cfg[group], group + "."))
            leaves["root", None] = {k: v for k, v in leaf_items(cfg) if k.split(".")[0] not in GROUPS and k != "resume"}
    return {where: {k: v for k, v in found.items() if not k.endswith(".name")} for where, found in leaves.items()}


@FUZZ
@given(data=st.data())
def test_well_typed_overrides_fail_validation_with_acdc_error_or_give_a_usable_config(hydra_context, typed_leaves, data):
    choices = {group: data.draw(st.sampled_from(GROUPS[group]), label=group) for group in sorted(GROUPS)}
    leaves = {k: v for (group, choice), found in typed_leaves.items() if choices.get(group) == choice or group == "root" for k, v in found.items()}
    keys = dict.fromkeys(data.draw(st.lists(st.sampled_from(sorted(leaves)), min_size=1, max_size=3), label="keys"))
    overrides = [f"{group}={choice}" for group, choice in choices.items()]
    overrides += [f"{key}={typed_value(data.draw, leaves[key])}" for key in keys]
    try:
        cfg = compose("config", overrides=overrides)
    except (HydraException, OmegaConfBaseException):  # e.g. null for a non-optional field
        event("compose: config error")
        return
    assert_rejected_with_acdc_error_or_usable(cfg)


def leaf_items(container, prefix=""):
    for key, value in container.items():
        if isinstance(value, dict):
            yield from leaf_items(value, prefix + key + ".")
        elif not isinstance(value, list):
            yield prefix + key, value
