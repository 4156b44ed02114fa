"""``selfsup list`` and ``selfsup list METHOD``: what a user reads before setting method_args."""

from __future__ import annotations

import inspect

import pytest

from selfsup.catalog import argument_docs
from selfsup.cli import main
from selfsup.methods import METHODS


def test_list_method_prints_the_paper_and_every_argument_with_its_default(capsys):
    assert main(["list", "simclr"]) == 0
    out = capsys.readouterr().out
    assert "A Simple Framework for Contrastive Learning" in out  # the module docstring
    assert "optimiser: lars, lr 0.3 x batch/256" in out
    rows = {line.split()[0]: line.split()[1] for line in out.split("meaning:")[1].splitlines()[1:]}
    assert set(rows) == set(METHODS.get("simclr").argument_names())
    assert rows["temperature"] == "0.1" and rows["proj_hidden_dim"] == "2048"
    assert "backbone" not in rows  # a run config key, not a method argument


def test_text_method_defaults_come_from_every_signature_and_config_fields_are_apart():
    defaults = METHODS.get("bert").argument_defaults()
    assert defaults["mlm_probability"] == 0.15  # MaskedEncoder.build's keyword
    assert defaults["short_seq_prob"] == 0.1  # BERT's own
    assert "hidden_size" not in defaults  # a BertConfig field: the backbone decides
    # ELECTRA's constructor takes the two configs that build makes: not method arguments
    assert not {"discriminator", "generator"} & set(METHODS.get("electra").argument_names())
    # T5: its model's fields, not those every transformers config has
    t5 = set(METHODS.get("t5").argument_names())
    assert {"d_model", "num_heads", "noise_density"} <= t5
    assert not {"_name_or_path", "transformers_version", "return_dict", "vocab_size"} & t5


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_describes_itself_and_needs_no_argument(name):
    defaults = METHODS.get(name).argument_defaults()
    assert inspect.Parameter.empty not in defaults.values()  # `selfsup pretrain` sets none


def test_argument_docs_reads_google_style_entries():
    doc = """Summary.

    Args:
        alpha: the first. More about it
            on a second line.
        beta, gamma: shared text
            continued.

    Returns:
        nothing: not an argument.
    """
    assert argument_docs(inspect.cleandoc(doc)) == {
        "alpha": "the first.",
        "beta": "shared text continued.",
        "gamma": "shared text continued.",
    }


def test_unknown_method_is_one_clear_error(capsys):
    assert main(["list", "simclrr"]) != 0
    assert "Did you mean 'simclr'?" in capsys.readouterr().err


def test_list_protocol_prints_what_it_measures_and_its_options(capsys):
    assert main(["list", "finetune"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("finetune: fine-tune the encoder")
    assert "Options, each as ``--arg KEY=VALUE``" in out and "lora_rank" in out
    assert main(["list", "knn"]) == 0
    assert "selfsup evaluate's flags" in capsys.readouterr().out
    assert main(["list", "mlm"]) == 0  # a method and the protocol that evaluates it
    both = capsys.readouterr().out
    assert "method_args" in both and "evaluation protocol mlm: masked-token accuracy" in both


def test_list_of_an_unknown_name_suggests_the_closest_and_lists_both_kinds(capsys):
    assert main(["list", "fewshots"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'fewshot'?" in err and "Methods: " in err and "Protocols: " in err


@pytest.mark.parametrize("name", METHODS.names())
def test_every_default_backbone_is_a_registered_one(name):
    from selfsup.backbones import VISION_BACKBONES
    from selfsup.backbones.text_configs import TEXT_BACKBONES
    from selfsup.methods import BuildContext

    cls = METHODS.get(name)
    for size in (32, 224):
        picked = cls.backbone_for(BuildContext(image_size=size))
        if name == "word2vec":
            assert picked is None  # its tables are the model
        else:
            assert picked in (VISION_BACKBONES if cls.kind != "text" else TEXT_BACKBONES)
        assert cls.backbone_for(BuildContext(backbone="x", image_size=size)) == "x"
    if name in ("mae", "dino"):  # small images get 4-pixel patches
        assert cls.backbone_for(BuildContext(image_size=32)).endswith("patch4")
