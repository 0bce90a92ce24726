"""Build tiny random-weight models offline, deterministically, and save them with `save_pretrained`.

    sustaindiffusion-worker build-tiny-models DIR

writes DIR/sd3 (StableDiffusion3Pipeline), DIR/sd1 (StableDiffusionPipeline), DIR/blip-vqa
(BlipForQuestionAnswering + BlipProcessor whose answer head is fitted to answer each question with
a word of its answer group that depends on the image: `tiny_vqa`), DIR/clip (CLIPModel +
CLIPProcessor), DIR/clip-detector (a CLIPModel whose projections are set so that its zero-shot
answers depend on the image: `tiny_clip`) and DIR/detector (YolosForObjectDetection + its image
processor); with `--families` also DIR/sdxl (StableDiffusionXLPipeline), DIR/sd35
(StableDiffusion3Pipeline with SD3.5's query-key normalisation and a dual-attention layer),
DIR/flux-dev and DIR/flux-schnell (FluxPipeline with and without the guidance embedding). Tokenizers are
trained here on a small corpus (the method's prompts and keywords, the VQA questions and answers);
nothing comes from a model hub. Tests and the quickstart load these folders through the same
`from_pretrained` code path as real models. The numbers such models produce are meaningless.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import math
import shutil
import stat
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from PIL import Image
from tokenizers import Regex as TokenizerRegex
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import (
    BertTokenizer,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
    YolosConfig,
    YolosForObjectDetection,
    YolosImageProcessor,
)

from sustaindiffusion.api.keywords import DEFAULT_NEGATIVE_POOL, DEFAULT_POSITIVE_POOL, METHOD_SEARCH_PROMPT
from sustaindiffusion.worker.answer_groups import ETHNIC_GROUPS, FEMALE_ANSWERS, MALE_ANSWERS
from sustaindiffusion.worker.scoring import ETHNICITY_QUESTION, GENDER_QUESTION, HUMAN_QUESTION
from sustaindiffusion.worker.tiny_clip import build_clip_detector as build_fitted_clip
from sustaindiffusion.worker.tiny_vqa import build_blip_vqa as build_fitted_vqa

SEED = 1234
CLIP_SPECIAL = ("<|startoftext|>", "<|endoftext|>")
TINY_MODEL_NAMES = ("sd3", "sd1", "blip-vqa", "clip", "clip-detector", "detector")
# One tiny pipeline per further model family (`sustaindiffusion.worker.families`), built on demand.
TINY_FAMILY_NAMES = ("sdxl", "sd35", "flux-dev", "flux-schnell")


def corpus() -> list[str]:
    """Text the tiny tokenizers are trained on."""
    answers = [*FEMALE_ANSWERS, *MALE_ANSWERS, "yes", "no"]
    for words in ETHNIC_GROUPS.values():
        answers.extend(words)
    lines = [
        METHOD_SEARCH_PROMPT,
        "Photo portrait of a Software Engineer that fixes bugs.",
        "Photo portrait of a Software Engineer that writes tests.",
        ", ".join(DEFAULT_POSITIVE_POOL),
        ", ".join(DEFAULT_NEGATIVE_POOL),
        HUMAN_QUESTION,
        GENDER_QUESTION,
        ETHNICITY_QUESTION,
        " ".join(answers),
        "0 1 2 3 4 5 6 7 8 9 ( ) + , . a photo of",
    ]
    return lines * 4


# ----------------------------------------------------------------------------- tokenizers


def clip_tokenizer(vocab_size: int = 600, max_length: int = 77) -> CLIPTokenizer:
    """A CLIP BPE tokenizer learnt from the corpus, with CLIP's normaliser and pre-tokeniser.

    Learnt here (`learn_merges`), not by the `tokenizers` trainer: its order among equally frequent
    merges, and so every token id, changes from run to run, and every model built on the ids with it.
    """
    pipeline = Tokenizer(models.BPE(unk_token="<|endoftext|>", end_of_word_suffix="</w>"))
    pipeline.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(TokenizerRegex(r"\s+"), " "), normalizers.Lowercase()]
    )
    pipeline.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                TokenizerRegex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                behavior="removed",
                invert=True,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    words: Counter[tuple[str, ...]] = Counter()
    for line in corpus():
        for piece, _ in pipeline.pre_tokenizer.pre_tokenize_str(pipeline.normalizer.normalize_str(line)):
            words[(*piece[:-1], piece[-1] + "</w>")] += 1
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    word_ends = sorted({word[-1] for word in words})
    base = [*CLIP_SPECIAL, *alphabet, *word_ends]
    merges = learn_merges(words, vocab_size - len(base))
    vocab = list(dict.fromkeys([*base, *("".join(pair) for pair in merges)]))
    return CLIPTokenizer(
        vocab={token: index for index, token in enumerate(vocab)}, merges=merges, model_max_length=max_length
    )


def learn_merges(words: Counter[tuple[str, ...]], count: int) -> list[tuple[str, str]]:
    """Byte-pair merges, most frequent pair first; ties go to the smallest pair: deterministic."""
    merges: list[tuple[str, str]] = []
    current = dict(words)
    while len(merges) < count:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, frequency in current.items():
            for pair in itertools.pairwise(word):
                pairs[pair] += frequency
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        merged: dict[tuple[str, ...], int] = {}
        for word, frequency in current.items():
            symbols, index = [], 0
            while index < len(word):
                if word[index : index + 2] == best:
                    symbols.append(word[index] + word[index + 1])
                    index += 2
                else:
                    symbols.append(word[index])
                    index += 1
            merged[tuple(symbols)] = merged.get(tuple(symbols), 0) + frequency
        current = merged
    return merges


def t5_tokenizer(max_length: int = 256) -> T5Tokenizer:
    """A unigram tokenizer in T5's layout (pad 0, eos 1, unk 2): every word of the corpus and every
    character, scored by log frequency (deterministic, unlike the `tokenizers` trainer's scores)."""
    pre_tokenizer = pre_tokenizers.Metaspace()
    pieces: Counter[str] = Counter()
    for line in corpus():
        for word, _ in pre_tokenizer.pre_tokenize_str(unicodedata.normalize("NFKC", line)):
            pieces[word] += 1
            pieces.update(word)
    total = sum(pieces.values())
    scored = sorted(pieces.items(), key=lambda item: (-item[1], item[0]))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(piece, math.log(frequency / total)) for piece, frequency in scored]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_length)


def bert_tokenizer() -> BertTokenizer:
    """A WordPiece vocabulary holding every word of the corpus, for the tiny BLIP model."""
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted({w.strip(",.?()+").lower() for line in corpus() for w in line.split()} - {""})
    characters = sorted({c for word in words for c in word})
    tokens = [*special, *words, *characters, *(f"##{c}" for c in characters), "?", ",", "."]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    return BertTokenizer(vocab=vocab)


# ----------------------------------------------------------------------------- models


def _clip_text_config(vocab_size: int, hidden: int, projection: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=projection,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )


def _tiny_vae(
    latent_channels: int, block_out_channels: tuple[int, ...] = (8, 8), **config: Any
) -> AutoencoderKL:
    """A VAE that halves the image's sides once per block after the first."""
    return AutoencoderKL(
        block_out_channels=block_out_channels,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(block_out_channels),
        up_block_types=("UpDecoderBlock2D",) * len(block_out_channels),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=32,
        **config,
    )


@dataclass(frozen=True)
class Sd3Size:
    clip_hidden: int
    t5_width: int
    t5_layers: int
    layers: int
    heads: int
    head_dim: int
    vae_channels: tuple[int, int]


TINY_SD3 = Sd3Size(
    clip_hidden=16, t5_width=32, t5_layers=2, layers=2, heads=2, head_dim=8, vae_channels=(8, 8)
)
# "Small": still random, but enough compute per step that generation dominates a pod's time on a CPU.
SMALL_SD3 = Sd3Size(
    clip_hidden=64, t5_width=128, t5_layers=4, layers=6, heads=4, head_dim=32, vae_channels=(32, 64)
)


# The random transformer's velocities are small next to the initial noise, so that its images would
# depend on their seed alone (settings: 3% of the pixel variance among images of one noise). Scaled
# up, steps, guidance and prompt change the image (about 40%), as they do with a trained model.
VELOCITY_SCALE = 10.0


def build_sd3(directory: Path, size: Sd3Size = TINY_SD3, **transformer_config: Any) -> None:
    torch.manual_seed(SEED)
    tokenizer = clip_tokenizer()
    tokenizer_3 = t5_tokenizer()
    clip = size.clip_hidden
    text_encoder = CLIPTextModelWithProjection(_clip_text_config(len(tokenizer), clip, clip))
    text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(len(tokenizer), clip, clip))
    text_encoder_3 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_3),
            d_model=size.t5_width,
            d_kv=size.t5_width // 4,
            d_ff=2 * size.t5_width,
            num_layers=size.t5_layers,
            num_heads=4 if size.t5_width >= 64 else 2,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=size.layers,
        attention_head_dim=size.head_dim,
        num_attention_heads=size.heads,
        joint_attention_dim=size.t5_width,  # T5's width; the two CLIPs are padded to it
        caption_projection_dim=size.heads * size.head_dim,
        pooled_projection_dim=2 * clip,  # the two CLIP projections side by side
        pos_embed_max_size=64,
        **transformer_config,
    )
    with torch.no_grad():
        transformer.proj_out.weight.mul_(VELOCITY_SCALE)
        transformer.proj_out.bias.mul_(VELOCITY_SCALE)
    vae = _tiny_vae(
        4,
        block_out_channels=size.vae_channels,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    pipeline = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=clip_tokenizer(),
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )
    pipeline.save_pretrained(directory)


def build_sd1(directory: Path) -> None:
    torch.manual_seed(SEED)
    tokenizer = clip_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    pipeline = StableDiffusionPipeline(
        # A latent a quarter of the image's side: the UNet's attention over a 64 px image's latent
        # stays small (16x16), so the defaults' 50 steps cost seconds on a CPU, not a minute.
        vae=_tiny_vae(4, block_out_channels=(8, 8, 8)),
        text_encoder=CLIPTextModel(_clip_text_config(len(tokenizer), 16, 16)),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(
            beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(directory)


def build_sdxl(directory: Path) -> None:
    """Two CLIP encoders of different widths (as CLIP-L and OpenCLIP-G), side by side in the UNet's
    cross-attention, the second one's projection as the pooled embedding."""
    torch.manual_seed(SEED)
    tokenizer = clip_tokenizer()
    first, second, time_embed = 16, 24, 8
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        cross_attention_dim=first + second,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * time_embed + second,  # 6 size/crop ids + pooled
        norm_num_groups=8,
    )
    with torch.no_grad():
        unet.conv_out.weight.mul_(VELOCITY_SCALE)
    pipeline = StableDiffusionXLPipeline(
        vae=_tiny_vae(4, block_out_channels=(8, 8, 8)),  # a quarter-side latent, as SD 1.x's
        text_encoder=CLIPTextModel(_clip_text_config(len(tokenizer), first, first)),
        text_encoder_2=CLIPTextModelWithProjection(_clip_text_config(len(tokenizer), second, second)),
        tokenizer=tokenizer,
        tokenizer_2=clip_tokenizer(),
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
        ),
        force_zeros_for_empty_prompt=True,
    )
    pipeline.save_pretrained(directory)


def build_sd35(directory: Path) -> None:
    """SD3.5's MMDiT: query-key RMS normalisation and (as in 3.5 Medium) a dual-attention layer."""
    build_sd3(directory, TINY_SD3, qk_norm="rms_norm", dual_attention_layers=(0,))


def build_flux(directory: Path, guidance_embeds: bool) -> None:
    """FLUX.1's layout: CLIP-L gives only the pooled embedding, T5 the whole sequence; FLUX.1-dev's
    transformer embeds the guidance value, schnell's has no such embedding."""
    torch.manual_seed(SEED)
    tokenizer_2 = t5_tokenizer(max_length=512)
    tokenizer = clip_tokenizer()
    clip, t5 = 16, 32
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels packed 2 x 2
        out_channels=None,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=t5,
        pooled_projection_dim=clip,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 4, 8),
    )
    with torch.no_grad():
        transformer.proj_out.weight.mul_(VELOCITY_SCALE)
    pipeline = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_tiny_vae(
            4, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611
        ),
        text_encoder=CLIPTextModel(_clip_text_config(len(tokenizer), clip, clip)),
        tokenizer=tokenizer,
        text_encoder_2=T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer_2),
                d_model=t5,
                d_kv=8,
                d_ff=2 * t5,
                num_layers=2,
                num_heads=2,
                pad_token_id=0,
                eos_token_id=1,
            )
        ),
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    pipeline.save_pretrained(directory)


# The vision tower shared by the tiny BLIP and CLIP models: 32 px images in 8 px patches.
TINY_VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}


def build_blip_vqa(directory: Path) -> None:
    """A BLIP VQA model that answers each question with a word of its answer group, chosen by the
    image (`sustaindiffusion.worker.tiny_vqa`), fitted on images of the tiny SD3 pipeline."""
    images, noises = sd3_calibration_images(SEED)
    build_fitted_vqa(directory, SEED, bert_tokenizer(), TINY_VISION, images, noises)


CALIBRATION_NOISES = 48  # initial noises (more than the VQA's hidden size), each under every setting


def sd3_calibration_images(seed: int) -> tuple[list[Image.Image], list[int]]:
    """Images of the tiny SD3 pipeline over its settings' range, each initial noise under every
    setting, and which noise each image started from. Built and run in a temporary folder (no
    builder reads another's output)."""
    prompt = "Photo portrait of a Software Engineer that codes"
    settings = [
        (steps, guidance, keywords)
        for steps in (2, 4, 8)
        for guidance, keywords in ((1.0, ""), (7.0, ", (photograph)++, (gentle)++"))
    ]
    images: list[Image.Image] = []
    noises: list[int] = []
    with tempfile.TemporaryDirectory() as folder:
        build_sd3(Path(folder))
        pipeline = StableDiffusion3Pipeline.from_pretrained(folder)
        pipeline.set_progress_bar_config(disable=True)
        for steps, guidance, keywords in settings:
            output = pipeline(
                [prompt + keywords] * CALIBRATION_NOISES,
                negative_prompt=["drawing, (assertive)++" if keywords else ""] * CALIBRATION_NOISES,
                num_inference_steps=steps,
                guidance_scale=guidance,
                width=64,
                height=64,
                generator=torch.Generator().manual_seed(seed),  # the same noises under every setting
            )
            images.extend(output.images)
            noises.extend(range(CALIBRATION_NOISES))
    return images, noises


def build_clip(directory: Path) -> None:
    torch.manual_seed(SEED)
    tokenizer = clip_tokenizer()
    config = CLIPConfig(
        text_config=_clip_text_config(len(tokenizer), 32, 16).to_dict(),
        vision_config=TINY_VISION | {"projection_dim": 16},
        projection_dim=16,
    )
    model = CLIPModel(config)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    model.save_pretrained(directory)
    processor.save_pretrained(directory)


def build_clip_detector(directory: Path) -> None:
    """A CLIP model whose zero-shot answers (`clip_detector`) depend on the image: its projections
    are set on images of the tiny SD3 pipeline (`sustaindiffusion.worker.tiny_clip`)."""
    images, noises = sd3_calibration_images(SEED)
    text = _clip_text_config(len(clip_tokenizer()), 32, 16)
    build_fitted_clip(directory, SEED, clip_tokenizer(), text, TINY_VISION, images, noises)


def build_detector(directory: Path) -> None:
    torch.manual_seed(SEED)
    config = YolosConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=[32, 32],
        patch_size=8,
        num_detection_tokens=4,
        id2label={0: "person", 1: "laptop", 2: "chair"},
        label2id={"person": 0, "laptop": 1, "chair": 2},
    )
    YolosForObjectDetection(config).save_pretrained(directory)
    YolosImageProcessor(size={"shortest_edge": 32, "longest_edge": 32}).save_pretrained(directory)


BUILDERS: dict[str, Callable[[Path], None]] = {
    "sd3": build_sd3,
    "sd1": build_sd1,
    "blip-vqa": build_blip_vqa,
    "clip": build_clip,
    "clip-detector": build_clip_detector,
    "detector": build_detector,
    "sd3-small": lambda directory: build_sd3(directory, SMALL_SD3),  # for benchmarks, built on demand
    "sdxl": build_sdxl,
    "sd35": build_sd35,
    "flux-dev": lambda directory: build_flux(directory, guidance_embeds=True),
    "flux-schnell": lambda directory: build_flux(directory, guidance_embeds=False),
}


def builder_version() -> str:
    """A digest of the builders' source (`tiny_*.py`): models built by other code are rebuilt."""
    sources = sorted(Path(__file__).parent.glob("tiny_*.py"))
    return hashlib.sha256(b"".join(source.read_bytes() for source in sources)).hexdigest()[:12]


def _make_world_readable(directory: Path) -> None:
    """Let any user read the files: some writers create them 0600, and the worker image runs as uid 1000."""
    for path in [directory, *directory.rglob("*")]:
        extra = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
        if path.is_dir():
            extra |= stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
        path.chmod(path.stat().st_mode | extra)


def build_tiny_models(directory: Path, names: tuple[str, ...] = TINY_MODEL_NAMES) -> dict[str, Path]:
    """Build the named tiny models under `directory` (skipping those this version already built).
    Processes that build into one directory at once take turns (a lock file beside the models), so
    none removes a model another is writing."""
    built, version = {}, builder_version()
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in names:
            target = directory / name
            marker = target / ".complete"
            if not marker.exists() or marker.read_text().strip() != version:
                if target.exists():
                    shutil.rmtree(target)
                target.mkdir(parents=True)
                BUILDERS[name](target)
                _make_world_readable(target)
                marker.write_text(version + "\n")
            built[name] = target
    return built
