"""The VideoMAE ViT encoder and `MAEWrapper`, which puts masked-autoencoder pretraining around any encoder."""

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from tubemask.decoders import MAEDecoder
from tubemask.layers import Block
from tubemask.losses import IMAGENET_MEAN, IMAGENET_STD, TargetKind, masked_mse, reconstruction_targets
from tubemask.pos_embed import SinusoidPositionEmbedding
from tubemask.shapes import typechecked
from tubemask.tokenizers import CubeEmbedding
from tubemask.tokens import selected_ids, split_ids

__all__ = ["ViTEncoder", "MAEWrapper", "MAEOutput"]


class ViTEncoder(nn.Module):
    """The VideoMAE ViT body: pre-norm blocks then a final LayerNorm, mapping `[b v d] -> [b v d]`.

    Tokenization and positions live in [MAEWrapper][tubemask.encoders.MAEWrapper] (or a classifier), so the same
    body encodes visible tokens during pretraining and all tokens during fine-tuning.

    Args:
        embed_dim: token width.
        depth: number of blocks.
        num_heads: attention heads.
        mlp_ratio: MLP inner width over `embed_dim`.
        qkv_bias: learn `q_bias` / `v_bias`.
        drop_rate: dropout inside blocks.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth, linearly increasing over the blocks.
        norm_eps: LayerNorm epsilon (VideoMAE: 1e-6).
        final_norm: apply the final LayerNorm (`encoder.norm` in official checkpoints). HF's
            `use_mean_pooling=True` default drops it from the pretraining encoder.
    """

    def __init__(
        self,
        embed_dim: int,
        *,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-6,
        final_norm: bool = True,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.depth = depth
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist() if depth else []
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=r,
                norm_eps=norm_eps,
            )
            for r in rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps) if final_norm else nn.Identity()
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass instead of storing them."""
        self.grad_checkpointing = enable

    def forward_blocks(self, x: Float[Tensor, "b v d"]) -> Float[Tensor, "b v d"]:
        """Run the blocks without the final norm."""
        for block in self.blocks:
            if self.grad_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x

    def forward_intermediates(self, x: Float[Tensor, "b v d"]) -> list[Tensor]:
        """Outputs of every block (before the final norm), for heads that read intermediate layers."""
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs

    def forward(self, x: Float[Tensor, "b v d"]) -> Float[Tensor, "b v d"]:
        return self.norm(self.forward_blocks(x))


@dataclass
class MAEOutput:
    """What a pretraining forward returns.

    Attributes:
        loss: mean squared error over the reconstructed cubes (scalar, float32).
        pred: predictions of the reconstructed cubes, `[b m k]`, ascending raster order.
        target: their targets, `[b m k]`, float32, no gradient.
        ids: flat raster indices of the reconstructed cubes, `[b m]`.
        visible_ids: flat raster indices of the visible tokens, `[b v]`.
        latent: encoder output for the visible tokens, `[b v d]`.
    """

    loss: Tensor
    pred: Tensor
    target: Tensor
    ids: Tensor
    visible_ids: Tensor
    latent: Tensor


def _set_encoder_grad_checkpointing(encoder: nn.Module, enable: bool, *, owner: str, hint: str = "") -> None:
    """Call `encoder.set_grad_checkpointing(enable)`, or raise a TypeError naming `owner` and the encoder's class
    (then `hint`) when the encoder has no such method: the wrappers' shared switch for any encoder."""
    method = getattr(encoder, "set_grad_checkpointing", None)
    if method is None:
        raise TypeError(f"{owner}: the encoder {type(encoder).__name__} has no set_grad_checkpointing method{hint}")
    method(enable)


class MAEWrapper(nn.Module):
    """Masked-autoencoder pretraining around ANY encoder mapping `Float[b v d] -> Float[b v d]`.

    The wrapper owns the cube tokenizer, the positions, the choice of visible tokens and the hand-off to the decoder and
    loss; the encoder only ever sees the visible tokens (VideoMAE, Tong et al., arXiv 2203.12602). Masks are made
    outside the model (see [tubemask.masking][]): `Bool[b n]`, **True = masked**, the same count in every row.

    Example:
        ```python
        model = MAEWrapper(my_encoder, tokenizer=CubeEmbedding(384), decoder=MAEDecoder(192, depth=4, num_heads=3,
                           out_dim=1536))
        mask = TubeMasker(mask_ratio=0.9)(video.shape[0], model.grid(video.shape))
        out = model(video, mask)
        out.loss.backward()
        ```

    Args:
        encoder: any module mapping `[b v d] -> [b v d]` with `d = tokenizer.embed_dim`.
        tokenizer: the cube embedding.
        decoder: the MAE decoder; its `out_dim` must be the cube size `k`.
        pos_embed: encoder position embedding called as `pos_embed(ids, grid, like)`; default VideoMAE's sinusoid.
        target: reconstruction target, `"norm_pix"` (VideoMAE), `"norm_pix_joint"` (mae_st) or `"pixels"`.
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
        target: TargetKind = "norm_pix",
        pixel_mean: tuple[float, ...] | None = IMAGENET_MEAN,
        pixel_std: tuple[float, ...] | None = IMAGENET_STD,
    ) -> None:
        super().__init__()
        k = tokenizer.tubelet_size * tokenizer.patch_size**2 * tokenizer.in_channels
        if decoder.out_dim != k:
            raise ValueError(f"decoder.out_dim={decoder.out_dim} must equal the cube size k={k}")
        if target not in ("norm_pix", "norm_pix_joint", "pixels"):
            raise ValueError(f"target must be 'norm_pix', 'norm_pix_joint' or 'pixels', got {target!r}")
        self.tokenizer = tokenizer
        self.pos_embed = pos_embed if pos_embed is not None else SinusoidPositionEmbedding(tokenizer.embed_dim)
        self.encoder = encoder
        self.encoder_to_decoder = nn.Linear(tokenizer.embed_dim, decoder.embed_dim, bias=False)
        self.decoder = decoder
        self.target = target
        self.pixel_mean = pixel_mean
        self.pixel_std = pixel_std

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
            _set_encoder_grad_checkpointing(
                self.encoder, enable, owner="MAEWrapper", hint="; pass encoder=False to checkpoint the decoder only"
            )
        if decoder:
            self.decoder.set_grad_checkpointing(enable)

    def no_weight_decay(self) -> set[str]:
        """Parameter names that take no weight decay besides norms and biases."""
        return {"decoder.mask_token"} | {n for n, _ in self.named_parameters() if "pos_embed" in n}

    @typechecked
    def encode(self, video: Float[Tensor, "b c t h w"], visible_ids: Int[Tensor, "b v"]) -> Float[Tensor, "b v d"]:
        """Embed only the cubes at `visible_ids`, add their positions and run the encoder."""
        grid = self.grid(video.shape)
        x = self.tokenizer(video, visible_ids)
        x = x + self.pos_embed(visible_ids, grid, x)
        return self.encoder(x)

    @typechecked
    def forward(
        self,
        video: Float[Tensor, "b c t h w"],
        mask: Bool[Tensor, "b n"],
        decoder_mask: Bool[Tensor, "b n"] | None = None,
    ) -> MAEOutput:
        """One pretraining forward.

        Args:
            video: normalised clips.
            mask: True = hidden from the encoder; the same count in every row.
            decoder_mask: dual masking (VideoMAE V2): True = not reconstructed. The decoder then predicts only the
                cubes that are masked and not decoder-masked, and the loss averages over those. Every row must keep the
                same number (e.g. tube masking with a running-cell decoder mask over a multiple of 4 time slots).

        Returns:
            [MAEOutput][tubemask.encoders.MAEOutput] with `.loss`, `.pred`, `.target`.
        """
        grid = self.grid(video.shape)
        n = grid[0] * grid[1] * grid[2]
        if mask.shape[1] != n:
            raise ValueError(f"mask has {mask.shape[1]} tokens per row, clips of shape {tuple(video.shape)} have {n}")
        visible_ids, masked_ids = split_ids(mask)
        if decoder_mask is not None:
            masked_ids = selected_ids(mask & ~decoder_mask)
        latent = self.encode(video, visible_ids)
        pred = self.decoder(self.encoder_to_decoder(latent), visible_ids, masked_ids, grid)
        target = reconstruction_targets(
            video,
            masked_ids,
            tubelet_size=self.tokenizer.tubelet_size,
            patch_size=self.tokenizer.patch_size,
            kind=self.target,
            mean=self.pixel_mean,
            std=self.pixel_std,
        )
        return MAEOutput(
            loss=masked_mse(pred, target),
            pred=pred,
            target=target,
            ids=masked_ids,
            visible_ids=visible_ids,
            latent=latent,
        )

    @typechecked
    def forward_features(self, video: Float[Tensor, "b c t h w"]) -> Float[Tensor, "b n d"]:
        """Encode every token (no mask), e.g. for probing or fine-tuning heads."""
        grid = self.grid(video.shape)
        b = video.shape[0]
        ids = torch.arange(grid[0] * grid[1] * grid[2], device=video.device).expand(b, -1)
        x = self.tokenizer(video)
        x = x + self.pos_embed(ids, grid, x)
        return self.encoder(x)
