"""`MAEWrapper`: masked-autoencoder pretraining around any encoder, as named steps with a pluggable target and loss.

The forward reads as mae_st's `MaskedAutoencoderViT` does, one step each: [forward_encoder][tubemask.mae.MAEWrapper.
forward_encoder] embeds the visible cubes, adds their positions and runs the encoder;
[forward_decoder][tubemask.mae.MAEWrapper.forward_decoder] predicts the queried cubes;
[forward_loss][tubemask.mae.MAEWrapper.forward_loss] computes their targets and the loss. A new method is a new piece
(a masker, a [Target][tubemask.targets.Target], a [Loss][tubemask.losses.Loss]), not a fork of the model.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from tubemask.decoders import MAEDecoder
from tubemask.losses import Loss, reconstruction_mse
from tubemask.pixel_stats import IMAGENET_MEAN, IMAGENET_STD
from tubemask.pos_embed import SinusoidPositionEmbedding
from tubemask.shapes import typechecked
from tubemask.targets import Target, TargetKind, as_target
from tubemask.tokenizers import CubeEmbedding
from tubemask.tokens import selected_ids, split_ids

__all__ = ["MAEOutput", "MAEWrapper", "encoder_intermediates", "set_encoder_grad_checkpointing"]


@dataclass
class MAEOutput:
    """What a pretraining forward returns.

    Attributes:
        loss: the loss over the queried cubes (scalar, float32).
        pred: predictions of the queried cubes, ascending raster order.
        target: their targets, float32, no gradient.
        query_ids: flat raster indices of the queried (reconstructed) cubes: the masked ones, less the decoder-masked
            ones under dual masking.
        visible_ids: flat raster indices of the visible tokens.
        latent: encoder output for the visible tokens.
    """

    loss: Float[Tensor, ""]
    pred: Float[Tensor, "b m k"]
    target: Float[Tensor, "b m k"]
    query_ids: Int[Tensor, "b m"]
    visible_ids: Int[Tensor, "b v"]
    latent: Float[Tensor, "b v d"]


def set_encoder_grad_checkpointing(encoder: nn.Module, enable: bool, *, owner: str, hint: str = "") -> None:
    """Call `encoder.set_grad_checkpointing(enable)`, or raise a TypeError naming `owner` and the encoder's class
    (then `hint`) when the encoder has no such method: the wrappers' shared switch for any encoder."""
    method = getattr(encoder, "set_grad_checkpointing", None)
    if method is None:
        raise TypeError(f"{owner}: the encoder {type(encoder).__name__} has no set_grad_checkpointing method{hint}")
    method(enable)


def encoder_intermediates(
    encoder: nn.Module, tokens: Tensor, *, owner: str, indices: int | Sequence[int] | None = None
) -> list[Tensor]:
    """`encoder.forward_intermediates(tokens)` (every block's output, before any final norm; with `indices`, those
    blocks', passed on as `indices=`), or a TypeError naming `owner` and the encoder's class when the encoder has no
    such method: the wrappers' shared call for any encoder."""
    method = getattr(encoder, "forward_intermediates", None)
    if method is None:
        raise TypeError(f"{owner}: the encoder {type(encoder).__name__} has no forward_intermediates")
    return method(tokens) if indices is None else method(tokens, indices=indices)


class MAEWrapper(nn.Module):
    """Masked-autoencoder pretraining around ANY encoder mapping `Float[b v d] -> Float[b v d]`.

    The wrapper owns the cube tokenizer, the positions, the choice of visible tokens and the hand-off to the decoder,
    the target and the loss; the encoder only ever sees the visible tokens (VideoMAE, Tong et al., arXiv 2203.12602).
    Masks are made outside the model (see [tubemask.masking][]): `Bool[b n]`, **True = masked**, the same count in
    every row.

    Example:
        ```python
        model = MAEWrapper(my_encoder, tokenizer=CubeEmbedding(384), decoder=MAEDecoder(192, depth=4, num_heads=3,
                           out_dim=1536))
        masker = TubeMasker(mask_ratio=0.9)
        mask = masker(video.shape[0], model.grid(video.shape))
        out = model(video, mask, num_masked=masker.num_masked(model.grid(video.shape)))  # no device sync
        out.loss.backward()
        ```

    Args:
        encoder: any module mapping `[b v d] -> [b v d]` with `d = tokenizer.embed_dim`.
        tokenizer: the cube embedding.
        decoder: the MAE decoder; its `out_dim` must be the target's width.
        pos_embed: encoder position embedding called as `pos_embed(ids, grid, like)`; default VideoMAE's sinusoid.
        target: what the queried cubes are reconstructed as: a [Target][tubemask.targets.Target], or a built-in's name,
            `"norm_pix"` (VideoMAE), `"norm_pix_joint"` (mae_st) or `"pixels"`.
        loss: `loss(pred, target) -> scalar` over the queried cubes (default: mean squared error).
        pixel_mean: per-channel mean the clips are normalised with (None: clips are raw values).
        pixel_std: per-channel std the clips are normalised with.
    """

    def __init__(
        self,
        encoder: nn.Module,
        *,
        tokenizer: CubeEmbedding,
        decoder: MAEDecoder,
        pos_embed: nn.Module | None = None,
        target: TargetKind | Target = "norm_pix",
        loss: Loss = reconstruction_mse,
        pixel_mean: tuple[float, ...] | None = IMAGENET_MEAN,
        pixel_std: tuple[float, ...] | None = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.target = target  # a Target (the property below converts a name)
        geometry = dict(
            tubelet_size=tokenizer.tubelet_size, patch_size=tokenizer.patch_size, channels=tokenizer.in_channels
        )
        k = self.target.width(**geometry)
        if decoder.out_dim != k:
            raise ValueError(f"decoder.out_dim={decoder.out_dim} must equal the target's width per cube, {k}")
        self.pos_embed = pos_embed if pos_embed is not None else SinusoidPositionEmbedding(tokenizer.embed_dim)
        self.encoder = encoder
        self.encoder_to_decoder = nn.Linear(tokenizer.embed_dim, decoder.embed_dim, bias=False)
        self.decoder = decoder
        self.loss = loss
        self.pixel_mean = pixel_mean
        self.pixel_std = pixel_std

    @property
    def target(self) -> Target:
        """The reconstruction target (assigning a built-in's name sets that built-in)."""
        return self._target

    @target.setter
    def target(self, value: TargetKind | Target) -> None:
        self._target = as_target(value)

    def grid(self, video_shape: torch.Size | tuple[int, ...]) -> tuple[int, int, int]:
        """Token grid `(T, H, W)` for clips of shape `b c t h w` (pass it to a masker)."""
        return self.tokenizer.grid(video_shape)

    def set_grad_checkpointing(self, enable: bool = True, *, encoder: bool = True, decoder: bool = True) -> None:
        """Recompute block activations in the backward pass instead of storing them (training only).

        In pretraining the decoder holds most of them: it runs every token of the clip (1568 for 16 x 224 x 224, against
        the encoder's 160 visible ones), so checkpointing both parts is what frees the memory. Drop path replays its RNG
        state in the recomputation, so gradients are unchanged.

        Args:
            enable: on or off.
            encoder: apply to the encoder (it must have a `set_grad_checkpointing(enable)` method).
            decoder: apply to the decoder.

        Raises:
            TypeError: `encoder=True` and the encoder has no `set_grad_checkpointing` method.
        """
        if encoder:
            set_encoder_grad_checkpointing(
                self.encoder, enable, owner="MAEWrapper", hint="; pass encoder=False to checkpoint the decoder only"
            )
        if decoder:
            self.decoder.set_grad_checkpointing(enable)

    def no_weight_decay(self) -> set[str]:
        """Parameter names that take no weight decay besides norms and biases."""
        return {"decoder.mask_token"} | {n for n, _ in self.named_parameters() if "pos_embed" in n}

    @typechecked
    def forward_encoder(
        self, video: Float[Tensor, "b c t h w"], visible_ids: Int[Tensor, "b v"]
    ) -> Float[Tensor, "b v d"]:
        """Embed only the cubes at `visible_ids`, add their positions and run the encoder."""
        grid = self.grid(video.shape)
        x = self.tokenizer(video, visible_ids)
        x = x + self.pos_embed(visible_ids, grid, x)
        return self.encoder(x)

    @typechecked
    def forward_decoder(
        self,
        latent: Float[Tensor, "b v d"],
        visible_ids: Int[Tensor, "b v"],
        query_ids: Int[Tensor, "b m"],
        grid: tuple[int, int, int],
    ) -> Float[Tensor, "b m k"]:
        """Project the encoder's tokens to the decoder's width and predict the cubes at `query_ids`."""
        return self.decoder(self.encoder_to_decoder(latent), visible_ids, query_ids, grid)

    @typechecked
    def forward_loss(
        self, video: Float[Tensor, "b c t h w"], pred: Float[Tensor, "b m k"], query_ids: Int[Tensor, "b m"]
    ) -> tuple[Float[Tensor, ""], Float[Tensor, "b m k"]]:
        """The targets of the cubes at `query_ids` and the loss of `pred` against them: `(loss, target)`."""
        target = self.target(
            video,
            query_ids,
            tubelet_size=self.tokenizer.tubelet_size,
            patch_size=self.tokenizer.patch_size,
            mean=self.pixel_mean,
            std=self.pixel_std,
        )
        return self.loss(pred, target), target

    @typechecked
    def forward(
        self,
        video: Float[Tensor, "b c t h w"],
        mask: Bool[Tensor, "b n"],
        decoder_mask: Bool[Tensor, "b n"] | None = None,
        *,
        num_masked: int | None = None,
        num_queried: int | None = None,
    ) -> MAEOutput:
        """One pretraining forward: encoder on the visible cubes, decoder on the queried ones, loss on their targets.

        Args:
            video: normalised clips.
            mask: True = hidden from the encoder; the same count in every row.
            decoder_mask: dual masking (VideoMAE V2): True = not reconstructed. The decoder then predicts only the
                cubes that are masked and not decoder-masked, and the loss averages over those. Every row must keep the
                same number (e.g. tube masking with a running-cell decoder mask over a multiple of 4 time slots).
            num_masked: masked tokens per row, when known (a masker's `num_masked(grid)`); taken as given, so the
                forward reads nothing back from the device. None: counted and checked here, which waits for the
                device twice per mask.
            num_queried: with `decoder_mask`, the queried cubes per row (`mask & ~decoder_mask`), likewise.

        Returns:
            [MAEOutput][tubemask.mae.MAEOutput] with `.loss`, `.pred`, `.target`, `.query_ids`.
        """
        grid = self.grid(video.shape)
        n = grid[0] * grid[1] * grid[2]
        if mask.shape[1] != n:
            raise ValueError(f"mask has {mask.shape[1]} tokens per row, clips of shape {tuple(video.shape)} have {n}")
        visible_ids, query_ids = split_ids(mask, num_masked)
        if decoder_mask is not None:
            query_ids = selected_ids(mask & ~decoder_mask, num_queried)
        latent = self.forward_encoder(video, visible_ids)
        pred = self.forward_decoder(latent, visible_ids, query_ids, grid)
        loss, target = self.forward_loss(video, pred, query_ids)
        return MAEOutput(loss, pred, target, query_ids, visible_ids, latent)

    def embed(self, video: Float[Tensor, "b c t h w"]) -> Float[Tensor, "b n d"]:
        """Every cube's token with its position, the encoder's input when nothing is masked."""
        grid = self.grid(video.shape)
        b = video.shape[0]
        ids = torch.arange(grid[0] * grid[1] * grid[2], device=video.device).expand(b, -1)
        x = self.tokenizer(video)
        return x + self.pos_embed(ids, grid, x)

    @typechecked
    def forward_features(self, video: Float[Tensor, "b c t h w"]) -> Float[Tensor, "b n d"]:
        """Encode every token (no mask), e.g. for probing or fine-tuning heads."""
        return self.encoder(self.embed(video))

    def forward_intermediates(
        self, video: Float[Tensor, "b c t h w"], indices: int | Sequence[int] | None = None
    ) -> list[Float[Tensor, "b n d"]]:
        """The output of every encoder block over every cube, `[b n d]` each, before the final norm; `indices` picks
        blocks as [block_indices][tubemask.encoders.block_indices] reads it (the encoder must take `indices=`).

        Raises:
            TypeError: when the encoder has no `forward_intermediates` method.
        """
        return encoder_intermediates(self.encoder, self.embed(video), owner=type(self).__name__, indices=indices)
