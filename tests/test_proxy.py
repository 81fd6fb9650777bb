"""Proxies of the black box's utility: differentiable, loaded the way users load them, never the
black box itself."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import transformers

from privacy_lit.proxy import CLIPZeroShotProxy, RecognizerProxy
from tests.conftest import TinyBenchmark

SIZE = 28


@pytest.fixture(scope="module")
def tiny_clip_dir(
    tmp_path_factory: pytest.TempPathFactory, byte_tokenizer: transformers.PreTrainedTokenizerFast
) -> Path:
    """A randomly initialized CLIP from a tiny config, saved with its processor, loaded by path
    exactly as a hub id would be."""
    path = tmp_path_factory.mktemp("tiny_clip")
    config = transformers.CLIPConfig(
        text_config={"vocab_size": len(byte_tokenizer), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "projection_dim": 16,
                     "max_position_embeddings": 64, "pad_token_id": byte_tokenizer.pad_token_id,
                     "bos_token_id": byte_tokenizer.bos_token_id,
                     "eos_token_id": byte_tokenizer.eos_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": SIZE, "patch_size": 14,
                       "projection_dim": 16},
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.CLIPModel(config).save_pretrained(path)
    image_processor = transformers.CLIPImageProcessor(
        size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}
    )
    transformers.CLIPProcessor(
        image_processor=image_processor, tokenizer=byte_tokenizer
    ).save_pretrained(path)
    return path


def _frames(batch: int = 2, frames: int = 3) -> torch.Tensor:
    return torch.rand(batch, frames, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_the_clip_proxy_scores_class_names_and_is_differentiable(tiny_clip_dir: Path) -> None:
    data = SimpleNamespace(class_names=["waving a hand", "jumping", "sitting down"])
    proxy = CLIPZeroShotProxy(str(tiny_clip_dir), max_frames=2)
    proxy.prepare(data, torch.device("cpu"))
    assert proxy.text_embeddings.shape[0] == 3 and proxy.size == SIZE
    frames = _frames().requires_grad_(True)
    loss = proxy.loss(frames, {"action": torch.tensor([0, 2])})
    (gradient,) = torch.autograd.grad(loss, frames)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert float(gradient.abs().sum()) > 0
    assert not any(p.requires_grad for p in proxy.model.parameters())  # never trained by a step
    with pytest.raises(ValueError, match="action"):
        proxy.loss(frames, {"question": ["q"]})


def test_the_recognizer_proxy_is_the_surrogate_recognizer(tiny: TinyBenchmark) -> None:
    from privacy_lit.baselines.surrogate import SurrogateConfig, train_recognizer_on_raw
    from privacy_lit.evaluation import stack_dataset

    data = tiny.data()
    proxy = RecognizerProxy(epochs=1)
    proxy.prepare(data, torch.device("cpu"))
    clips, actions = stack_dataset(data.utility_dataset("train"), "clip", "action")
    surrogate = train_recognizer_on_raw(
        clips, actions, len(data.class_names), SurrogateConfig(epochs=1)
    )
    for a, b in zip(
        proxy.model.state_dict().values(), surrogate.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)  # one recognizer, one training function, one configuration
    with pytest.raises(RuntimeError, match="prepare"):
        RecognizerProxy().loss(_frames(), {"action": torch.tensor([0, 1])})


def test_the_recognizer_proxy_cache_trains_once_per_key(
    tiny: TinyBenchmark, tmp_path: Path
) -> None:
    data = tiny.data()
    first = RecognizerProxy(epochs=1, cache_dir=str(tmp_path))
    first.prepare(data, torch.device("cpu"))
    (entry,) = tmp_path.glob("proxy_tsm_*.pt")
    second = RecognizerProxy(epochs=1, cache_dir=str(tmp_path))
    second.prepare(data, torch.device("cpu"))
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(),
                    strict=True):  # fmt: skip
        assert torch.equal(a, b)
    RecognizerProxy(epochs=2, cache_dir=str(tmp_path)).prepare(data, torch.device("cpu"))
    assert len(list(tmp_path.glob("proxy_tsm_*.pt"))) == 2  # another configuration, another key
    assert entry.is_file()
