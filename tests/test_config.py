import pytest

from smec.config import Config, load_config
from smec.errors import SmecError


def test_default_config_loads_and_equals_schema_defaults():
    assert load_config() == Config()


@pytest.mark.parametrize("text, message", [
    ("train:\n  lr: -1\n", "train.lr: Input should be greater than 0 (got -1)"),
    ("train:\n  stages: [96, 192]\n", "train: Value error, stages must strictly decrease"),
    ("train:\n  lrr: 0.1\n", "train.lrr: unknown key"),
    ("model: [1, 2\n", "invalid YAML"),
    ("eval:\n  methods: [raw, magic]\n", "eval.methods.1: Input should be"),
    ("embed:\n  rows_per_part: 8\n", "embed.rows_per_part: unknown key"),   # dead alias
    ("train:\n  use_ads: true\n", "train.use_ads: unknown key"),         # never read
])
def test_invalid_config_is_one_line_naming_the_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SmecError) as err:
        load_config(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(SmecError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_every_config_update_is_validated():
    from pydantic import ValidationError

    from smec.config import Config, TrainConfig, updated
    with pytest.raises(ValidationError, match="stages must strictly decrease"):
        TrainConfig().model_copy(update={"stages": [48, 96]})
    with pytest.raises(ValidationError, match="lrr"):
        updated(TrainConfig(), lrr=0.1)
    cfg = Config().model_copy(update={"train": {"stages": [96, 48]}})
    assert isinstance(cfg.train, TrainConfig) and cfg.train.stages == [96, 48]
    assert Config().model_copy(deep=True) == Config()


def test_each_method_trains_with_its_own_defaults_unless_the_config_changed_the_key():
    from smec.config import TrainConfig
    cfg = TrainConfig(per_method={"mrl": {"lr": 1e-3, "max_epochs_per_stage": 15}})
    mrl = cfg.for_method("mrl")
    assert (mrl.lr, mrl.max_epochs_per_stage) == (1e-3, 15) and cfg.for_method("smec").lr == cfg.lr
    assert mrl.for_method("mrl") == mrl                        # spent: applying twice is once
    assert cfg.for_method("mrl", "none").lr == cfg.lr          # label-free keeps the shared keys
    quick = cfg.model_copy(update={"max_epochs_per_stage": 3}).for_method("mrl")
    assert (quick.lr, quick.max_epochs_per_stage) == (1e-3, 3)  # a changed shared key wins
    ablation = TrainConfig().for_method("mrl+sxbm")   # MRL's settings, SMEC's S-XBM term
    assert (ablation.lr, ablation.rank_scale) == (0.00017, 40.0)
    assert (ablation.alpha_mode, ablation.unsup_loss, ablation.batch_unlabelled,
            ablation.sxbm_neighbour_grad) == ("share", "smooth", 128, False)
    with_ads = TrainConfig().for_method("mrl+ads")    # MRL's settings, SMEC's ADS settings
    assert (with_ads.lr, with_ads.ads_init_scale, with_ads.ads_lr_mult) == (0.00017, 100.0, 100.0)
    assert TrainConfig().for_method("smec-ads") == TrainConfig().for_method("smec").model_copy(
        update={"per_method": TrainConfig().for_method("smec-ads").per_method})
    with pytest.raises(ValueError, match="per_method.mrl: 'lrr' is not a train setting"):
        TrainConfig(per_method={"mrl": {"lrr": 1}})
    with pytest.raises(ValueError, match="per_method.mrl.lr"):
        TrainConfig(per_method={"mrl": {"lr": -1}})


def test_the_default_file_is_the_code_default():
    """`smec config` prints default.yaml: it must say what a run without --config does."""
    from smec.config import Config, default_config_path, load_config
    assert load_config(default_config_path()) == Config()


def test_a_renamed_key_says_what_to_write(tmp_path):
    (tmp_path / "old.yaml").write_text("concat:\n  beta: 0.5\n")
    with pytest.raises(SmecError, match="beta was renamed alpha"):
        load_config(tmp_path / "old.yaml")
    assert load_config(None).concat.alpha == 1.0
    (tmp_path / "gone.yaml").write_text("concat:\n  binary_threshold: median\n")
    with pytest.raises(SmecError, match="binary_threshold was removed: list binary-median"):
        load_config(tmp_path / "gone.yaml")
