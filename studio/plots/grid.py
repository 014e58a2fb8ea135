"""A labelled grid of pictures: X values across the top, Y values down the left, one block per
Z value (side by side, titled). Labels use Pillow's own scalable font (no system font assumed);
a cell that was not made (the plot was stopped) is an empty grey box."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

BACKGROUND, INK, EMPTY = (255, 255, 255), (0, 0, 0), (224, 224, 224)
GAP = 4


def font(size: int) -> ImageFont.ImageFont:
    """Pillow's built-in font at `size` (scalable when Pillow has FreeType, a bitmap otherwise)."""
    return ImageFont.load_default(size=size)


def wrap(text: str, face, width: int) -> list[str]:
    """Words on lines no wider than `width` (a word wider than that gets a line of its own)."""
    lines: list[str] = []
    for paragraph in str(text).split("\n"):
        line = ""
        for word in paragraph.split(" "):
            trial = f"{line} {word}".strip()
            if line and face.getlength(trial) > width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return lines


def _block(lines: list[str], face, line_height: int) -> int:
    return len(lines) * line_height


def _write(draw: ImageDraw.ImageDraw, lines: list[str], face, box: tuple[int, int, int, int], line_height: int):
    """Lines centred in a box."""
    left, top, right, bottom = box
    y = top + (bottom - top - _block(lines, face, line_height)) // 2
    for line in lines:
        x = left + (right - left - face.getlength(line)) / 2
        draw.text((x, y), line, fill=INK, font=face)
        y += line_height


def draw_grid(cells: list[list[list[Image.Image | None]]], x_labels: list[str], y_labels: list[str],
              z_labels: list[str]) -> Image.Image:
    """cells[z][y][x] (None: not made) with the labels of each axis ("" labels: no header)."""
    pictures = [c for block in cells for row in block for c in row if c is not None]
    cell_w = max((p.width for p in pictures), default=64)
    cell_h = max((p.height for p in pictures), default=64)
    size = max(14, min(48, cell_h // 10))
    face, line_height = font(size), int(size * 1.25)
    label_w = 0 if not any(y_labels) else min(max(cell_w, 8 * size),
                                              int(max(face.getlength(t) for t in y_labels)) + 2 * size)
    x_lines = [wrap(t, face, cell_w - 4) for t in x_labels]
    head_h = (max(map(len, x_lines)) * line_height + size) if any(x_labels) else 0
    title_h = (line_height + size) if any(z_labels) else 0
    block_w = label_w + len(x_labels) * (cell_w + GAP)
    block_h = title_h + head_h + len(y_labels) * (cell_h + GAP)
    grid = Image.new("RGB", (len(z_labels) * block_w + (len(z_labels) - 1) * 2 * GAP, block_h), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for z, block in enumerate(cells):
        left = z * (block_w + 2 * GAP)
        if title_h:
            _write(draw, wrap(z_labels[z], face, block_w), face, (left, 0, left + block_w, title_h), line_height)
        for x, lines in enumerate(x_lines):
            cx = left + label_w + x * (cell_w + GAP)
            _write(draw, lines, face, (cx, title_h, cx + cell_w, title_h + head_h), line_height)
        for y, row in enumerate(block):
            cy = title_h + head_h + y * (cell_h + GAP)
            if label_w:
                _write(draw, wrap(y_labels[y], face, label_w - size), face, (left, cy, left + label_w, cy + cell_h),
                       line_height)
            for x, picture in enumerate(row):
                cx = left + label_w + x * (cell_w + GAP)
                if picture is None:
                    draw.rectangle((cx, cy, cx + cell_w - 1, cy + cell_h - 1), fill=EMPTY)
                else:
                    grid.paste(picture.convert("RGB"), (cx + (cell_w - picture.width) // 2,
                                                        cy + (cell_h - picture.height) // 2))
    return grid
