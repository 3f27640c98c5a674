"""What the encoders read of a clip does not depend on the clips batched beside it."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModel, Wav2Vec2FeatureExtractor

from reasoning.model.encoders import MaskedGroupNorm, SSLEncoder, wave_normalization

from conftest import ROOT


def tiny_wavlm() -> torch.nn.Module:
    cfg = AutoConfig.for_model(**json.loads((ROOT / "data" / "tiny" / "wavlm.json").read_text()))
    assert cfg.feat_extract_norm == "group"  # as wavlm-base-plus: a group norm over time in the first conv
    torch.manual_seed(0)
    return AutoModel.from_config(cfg).eval()


def test_ssl_clip_alone_and_in_a_padded_batch_agree():
    """wavlm-base-plus's first group norm averaged over the padding: a 1 s clip beside a 4 s
    one differed from the same clip alone (here by up to 3.0, on features of scale 1)."""
    encoder = SSLEncoder(tiny_wavlm(), layer="weighted")
    g = torch.Generator().manual_seed(1)
    short, long = torch.randn(16000, generator=g) * 0.1, torch.randn(64000, generator=g) * 0.3
    with torch.no_grad():
        alone, n_alone = encoder.hidden_states(short[None], torch.tensor([len(short)]))
        batch, n_batch = encoder.hidden_states(torch.nn.utils.rnn.pad_sequence([short, long], batch_first=True),
                                               torch.tensor([len(short), len(long)]))
    n = int(n_alone[0])
    assert n == int(n_batch[0]) == 49 and batch[0].shape[1] == 199
    assert SSLEncoder(encoder.model).group_norm is encoder.group_norm  # a second wrapper reuses it
    for layer, (a, b) in enumerate(zip(alone, batch)):
        torch.testing.assert_close(b[0, :n], a[0, :n], atol=1e-4, rtol=1e-4, msg=f"layer {layer}")


def test_masked_group_norm_of_a_full_length_clip_is_the_original_module():
    norm = torch.nn.GroupNorm(8, 8)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    masked = MaskedGroupNorm(norm)
    x = torch.randn(3, 8, 50) * 4 + 1
    torch.testing.assert_close(masked(x), norm(x))  # no lengths: every frame is real
    masked.lengths = torch.tensor([50, 50, 50])
    torch.testing.assert_close(masked(x), norm(x), atol=1e-5, rtol=1e-5)
    masked.lengths = torch.tensor([50, 20, 50])
    torch.testing.assert_close(masked(x)[1, :, :20], norm(x[1:2, :, :20])[0], atol=1e-5, rtol=1e-5)
    assert not masked(x)[1, :, 20:].any()
    assert set(dict(masked.named_parameters())) == {"weight", "bias"}  # the state-dict keys stay


@pytest.mark.parametrize("do_normalize", [False, True])
def test_the_feature_extractors_do_normalize_decides_the_waveform_normalisation(tmp_path, do_normalize):
    from reasoning.model.builders import build_paralinguistic_encoder
    from reasoning.training.config import ParalinguisticConfig

    model = tiny_wavlm()
    model.save_pretrained(tmp_path)
    assert wave_normalization(str(tmp_path))  # no preprocessor config: the extractor's default
    Wav2Vec2FeatureExtractor(do_normalize=do_normalize).save_pretrained(tmp_path)
    assert wave_normalization(str(tmp_path)) is do_normalize
    encoder = build_paralinguistic_encoder(ParalinguisticConfig(kind="ssl", path=str(tmp_path), layer=2))
    assert encoder.normalize is do_normalize
    wave = torch.randn(1, 16000) * 0.05 + 0.02  # far from zero mean, unit variance
    with torch.no_grad():
        got = encoder.eval()(wave, torch.tensor([16000]))[0]
        fe = Wav2Vec2FeatureExtractor(do_normalize=do_normalize)
        inputs = torch.tensor(fe(wave[0].numpy(), sampling_rate=16000)["input_values"][0])[None]
        want = encoder.model(inputs, output_hidden_states=True).hidden_states[2]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
