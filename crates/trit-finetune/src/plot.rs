//! A dependency-free loss-curve PNG: train loss as a line, validation loss as squares, on a
//! light grid. No text (no fonts needed); the CSV log carries the numbers.

use std::path::Path;

use anyhow::{Context as _, Result};

const W: usize = 640;
const H: usize = 400;
const MARGIN: usize = 30;

struct Canvas {
    px: Vec<[u8; 3]>,
}

impl Canvas {
    fn new() -> Self {
        Self { px: vec![[255, 255, 255]; W * H] }
    }

    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if (0..W as i64).contains(&x) && (0..H as i64).contains(&y) {
            self.px[y as usize * W + x as usize] = c;
        }
    }

    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3]) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }
}

/// Plot `train` (step, loss) and `val` (step, loss) to a PNG file.
pub fn loss_png(path: &Path, train: &[(f64, f64)], val: &[(f64, f64)]) -> Result<()> {
    let mut c = Canvas::new();
    let all = train.iter().chain(val.iter());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all {
        x_max = x_max.max(x);
        if y.is_finite() {
            y_min = y_min.min(y);
            y_max = y_max.max(y);
        }
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let y_min = (y_min - 0.05 * (y_max - y_min)).max(0.0);
    let y_span = (y_max - y_min).max(1e-9);
    let (pw, ph) = ((W - 2 * MARGIN) as f64, (H - 2 * MARGIN) as f64);
    let map = |x: f64, y: f64| -> (i64, i64) {
        (MARGIN as i64 + (x / x_max * pw) as i64, (H - MARGIN) as i64 - ((y - y_min) / y_span * ph) as i64)
    };
    for i in 0..=4 {
        let y = MARGIN as i64 + (i as f64 * ph / 4.0) as i64;
        c.line((MARGIN as i64, y), ((W - MARGIN) as i64, y), [225, 225, 225]);
        let x = MARGIN as i64 + (i as f64 * pw / 4.0) as i64;
        c.line((x, MARGIN as i64), (x, (H - MARGIN) as i64), [225, 225, 225]);
    }
    c.line((MARGIN as i64, (H - MARGIN) as i64), ((W - MARGIN) as i64, (H - MARGIN) as i64), [0, 0, 0]);
    c.line((MARGIN as i64, MARGIN as i64), (MARGIN as i64, (H - MARGIN) as i64), [0, 0, 0]);
    for w in train.windows(2) {
        c.line(map(w[0].0, w[0].1), map(w[1].0, w[1].1), [31, 119, 180]);
    }
    if train.len() == 1 {
        let (x, y) = map(train[0].0, train[0].1);
        c.set(x, y, [31, 119, 180]);
    }
    for &(x, y) in val {
        let (cx, cy) = map(x, y);
        for dy in -3..=3 {
            for dx in -3..=3 {
                c.set(cx + dx, cy + dy, [214, 39, 40]);
            }
        }
    }
    std::fs::write(path, encode_png(&c)).with_context(|| format!("writing {}", path.display()))
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// RGB8 PNG with an uncompressed (stored-block) zlib stream.
fn encode_png(c: &Canvas) -> Vec<u8> {
    let mut raw = Vec::with_capacity(H * (1 + 3 * W));
    for row in c.px.chunks(W) {
        raw.push(0); // filter: none
        for p in row {
            raw.extend_from_slice(p);
        }
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = b.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(b);
    }
    z.extend_from_slice(&adler32(&raw).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(W as u32).to_be_bytes());
    ihdr.extend_from_slice(&(H as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_and_adler_match_known_values() {
        assert_eq!(crc32(b"IEND"), 0xae42_6082);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    }

    #[test]
    fn png_has_signature_and_size() {
        let dir = std::env::temp_dir().join(format!("trit-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("l.png");
        loss_png(&p, &[(1.0, 3.0), (2.0, 2.0), (3.0, 1.5)], &[(3.0, 1.8)]).unwrap();
        let b = std::fs::read(&p).unwrap();
        assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(u32::from_be_bytes(b[16..20].try_into().unwrap()), W as u32);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
