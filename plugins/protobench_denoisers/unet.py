"""The ProtoDiffusion U-Net (DDPM-style, paper A.2): residual blocks with dropout, self-attention at chosen
resolutions, a sinusoidal time embedding joined with the class conditioning by concatenation (paper Fig. 1),
addition, or `mlp` (the official code: the class embedding through its own MLP, projected in every block). It accepts all three kinds of ConditionSpec: an embedding, CBN modulation, input planes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from protobench import Conditioning, ConditionSpec, Denoiser


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al. 2017, as in DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def groups_for(channels: int) -> int:
    for g in (32, 16, 8, 4, 2, 1):
        if channels % g == 0 and channels // g >= 2:
            return g
    return 1


def memory_format(x: Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


class Dropout(nn.Dropout):
    """nn.Dropout; on the CPU its mask comes from one uniform draw compared with p, ~1.6× faster than
    bernoulli_ (the same distribution: each unit kept with probability 1 - p, scaled by 1 / (1 - p))."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        # the uniform draw in fp32 even under autocast: a bf16 draw would quantise p to 1/256
        return x * torch.rand_like(x, dtype=torch.float32).ge_(self.p).div_(1 - self.p).to(x.dtype)


class CondNorm(nn.Module):
    """GroupNorm; with norm_dim > 0 its scale and shift come from the conditioning (conditional norm)."""

    def __init__(self, channels: int, norm_dim: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups_for(channels), channels, affine=norm_dim == 0)
        self.modulation = nn.Linear(norm_dim, 2 * channels) if norm_dim > 0 else None

    def forward(self, x: Tensor, norm: Tensor | None) -> Tensor:
        h = self.norm(x)
        if self.modulation is None:
            return h
        if norm is None:
            raise ValueError("this U-Net was built for conditional normalisation but got no `norm` conditioning")
        gamma, beta = self.modulation(norm).chunk(2, dim=1)
        return h * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, dropout: float, norm_dim: int):
        super().__init__()
        self.norm1 = CondNorm(cin, norm_dim)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb, cout)
        self.norm2 = CondNorm(cout, norm_dim)
        self.dropout = Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, temb_act: Tensor, norm: Tensor | None) -> Tensor:
        """`temb_act` is SiLU(time embedding), computed once per forward for every block."""
        h = self.conv1(F.silu(self.norm1(x, norm)))
        h = h + self.temb(temb_act)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h, norm))))
        return self.skip(x) + h


class Attention(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups_for(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x))
        if qkv.is_contiguous(memory_format=torch.channels_last):
            # channels-last is (b, h, w, 3c) in memory: the tokens are rows already, no copy
            q, k, v = qkv.permute(0, 2, 3, 1).reshape(b, 1, h * w, 3 * c).split(c, dim=-1)
            out = F.scaled_dot_product_attention(q, k, v)  # one head of width c
            return x + self.proj(out.reshape(b, h, w, c).permute(0, 3, 1, 2))
        q, k, v = qkv.reshape(b, 3, c, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2)[:, None], k.transpose(1, 2)[:, None], v.transpose(1, 2)[:, None])
        return x + self.proj(out[:, 0].transpose(1, 2).reshape(b, c, h, w))


class Level(nn.Module):
    """Residual blocks (each optionally followed by attention) at one resolution."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList()
        self.attns = nn.ModuleList()


class UNet(Denoiser):
    name = "unet"
    #: on a CPU, activations at least this many pixels wide run channels-last: there oneDNN's NHWC
    #: convolutions win (1.2× at 32 px), below it GroupNorm's NCHW kernel does (2× its NHWC one's speed).
    #: On a GPU every level runs channels-last (what tensor-core convolutions want).
    channels_last_from = 32

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        cond: ConditionSpec = ConditionSpec(),
        base_channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2),
        num_res_blocks: int = 2,
        attention_resolutions: tuple[int, ...] = (4,),
        dropout: float = 0.1,
        join: str = "concat",
    ):
        super().__init__()
        if join not in ("concat", "add", "mlp"):
            raise ValueError(f"join must be 'concat', 'add' or 'mlp', got {join!r}")
        if base_channels < 1 or num_res_blocks < 1:
            raise ValueError(f"base_channels and num_res_blocks must be >= 1, got {base_channels}, {num_res_blocks}")
        if not channel_mult or min(channel_mult) < 1:
            raise ValueError(f"channel_mult must be one or more multipliers >= 1, got {channel_mult}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        c, h, w = image_shape
        if h % (2 ** (len(channel_mult) - 1)) or w % (2 ** (len(channel_mult) - 1)):
            raise ValueError(f"image size {h}×{w} cannot be halved {len(channel_mult) - 1} times (channel_mult={channel_mult})")
        self.image_shape, self.cond_spec, self.join = tuple(image_shape), cond, join
        ch, temb = base_channels, 4 * base_channels
        self.time_channels = ch
        in_temb = ch + (cond.emb_dim if join == "concat" else 0)
        self.time_mlp = nn.Sequential(nn.Linear(in_temb, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.cond_proj = nn.Linear(cond.emb_dim, temb) if (cond.emb_dim and join == "add") else None
        if cond.emb_dim and join == "mlp":  # official: embedding.py's Linear-SiLU-Linear, then unet.py's cemb_layer
            e = cond.emb_dim
            self.cond_proj = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e),
                                           nn.Linear(e, temb), nn.SiLU(), nn.Linear(temb, temb))
        # mlp: each block reads [SiLU(time), SiLU(class)] through one Linear = the official temb_proj + cemb_proj
        block_temb = 2 * temb if (cond.emb_dim and join == "mlp") else temb
        nd = cond.norm_dim
        self.conv_in = nn.Conv2d(c + cond.planes, ch, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [ch]
        cur, res = ch, h
        for i, mult in enumerate(channel_mult):
            level = Level()
            for _ in range(num_res_blocks):
                level.blocks.append(ResBlock(cur, ch * mult, block_temb, dropout, nd))
                cur = ch * mult
                level.attns.append(Attention(cur) if res in attention_resolutions else nn.Identity())
                skips.append(cur)
            self.down.append(level)
            if i != len(channel_mult) - 1:
                self.downsample.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                skips.append(cur)
                res //= 2
        self.mid1 = ResBlock(cur, cur, block_temb, dropout, nd)
        self.mid_attn = Attention(cur)
        self.mid2 = ResBlock(cur, cur, block_temb, dropout, nd)
        self.feature_channels = cur
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, mult in reversed(list(enumerate(channel_mult))):
            level = Level()
            for _ in range(num_res_blocks + 1):
                level.blocks.append(ResBlock(cur + skips.pop(), ch * mult, block_temb, dropout, nd))
                cur = ch * mult
                level.attns.append(Attention(cur) if res in attention_resolutions else nn.Identity())
            self.up.append(level)
            if i != 0:
                self.upsample.append(nn.Conv2d(cur, cur, 3, padding=1))
                res *= 2
        self.norm_out = CondNorm(cur, nd)
        self.conv_out = nn.Conv2d(cur, c, 3, padding=1)

    def _embed(self, t: Tensor, cond: Conditioning) -> Tensor:
        temb = timestep_embedding(t, self.time_channels).to(self.conv_in.weight.dtype)  # follow .to(dtype)
        if self.cond_spec.emb_dim:
            if cond.emb is None:
                raise ValueError("this U-Net was built for an embedding but the conditioning has none")
            if self.join == "concat":  # z̃ = [t, e_y]  (ProtoDiffusion Fig. 1)
                return self.time_mlp(torch.cat([temb, cond.emb.to(temb.dtype)], dim=1))
            if self.join == "mlp":  # kept apart: every block projects each (official unet.py:110-113)
                return torch.cat([self.time_mlp(temb), self.cond_proj(cond.emb.to(temb.dtype))], dim=1)
            return self.time_mlp(temb) + self.cond_proj(cond.emb)
        return self.time_mlp(temb)

    def _layout(self, h: Tensor) -> Tensor:
        wide = h.device.type == "cuda" or h.shape[-1] >= self.channels_last_from
        return h.contiguous(memory_format=torch.channels_last if wide else torch.contiguous_format)

    def _encode(self, x_t: Tensor, t: Tensor, cond: Conditioning):
        if self.cond_spec.planes:
            if cond.planes is None:
                raise ValueError("this U-Net was built for input planes but the conditioning has none")
            x_t = torch.cat([x_t, cond.planes.to(x_t.dtype)], dim=1)
        temb = F.silu(self._embed(t, cond))  # every block takes SiLU(temb): computed once
        h = self.conv_in(self._layout(x_t))
        hs = [h]
        for i, level in enumerate(self.down):
            for block, attn in zip(level.blocks, level.attns, strict=True):
                h = attn(block(h, temb, cond.norm))
                hs.append(h)
            if i < len(self.downsample):
                h = self._layout(self.downsample[i](h))
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb, cond.norm)), temb, cond.norm)
        return h, hs, temb

    def forward(self, x_t: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        h, hs, temb = self._encode(x_t, t, cond)
        for i, level in enumerate(self.up):
            for block, attn in zip(level.blocks, level.attns, strict=True):
                h = attn(block(torch.cat([h, hs.pop()], dim=1), temb, cond.norm))
            if i < len(self.upsample):
                h = self.upsample[i](self._layout(F.interpolate(h, scale_factor=2, mode="nearest")))
        # callers get the usual contiguous layout back
        return self.conv_out(F.silu(self.norm_out(h, cond.norm))).contiguous()

    def features(self, x_t: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        """The bottleneck activations (B, C', H', W'), as Graikos et al. use for their classifier."""
        return self._encode(x_t, t, cond)[0].contiguous()
