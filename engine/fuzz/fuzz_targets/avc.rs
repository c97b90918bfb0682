//! H.264 helpers: `AvcConfig::parse` (decoder configuration record + SPS), `avcc_to_annexb`
//! (length-prefixed → Annex B), `write_annexb_parameter_sets` and `codec_string`.
//!
//! Never panics; a parsed config is self-consistent; `avcc_to_annexb` agrees with an independent
//! reference conversion and leaves `out` untouched on error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strom_engine::formats::avc::{avcc_to_annexb, write_annexb_parameter_sets, AvcConfig, START_CODE};

/// Reference AVCC → Annex B: `Some((annexb, nal_count, types))` or `None` if the sample is malformed.
fn reference(data: &[u8], nls: usize) -> Option<(Vec<u8>, usize, [bool; 32])> {
    let mut out = Vec::new();
    let mut count = 0;
    let mut types = [false; 32];
    let mut pos = 0;
    while pos < data.len() {
        if data.len() - pos < nls {
            return None;
        }
        let mut len = 0usize;
        for &b in &data[pos..pos + nls] {
            len = (len << 8) | usize::from(b);
        }
        pos += nls;
        if data.len() - pos < len {
            return None;
        }
        let nal = &data[pos..pos + len];
        pos += len;
        if let Some(&h) = nal.first() {
            types[usize::from(h & 0x1f)] = true;
            count += 1;
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(nal);
        }
    }
    Some((out, count, types))
}

fuzz_target!(|data: &[u8]| {
    // 1. The whole input as an AVCDecoderConfigurationRecord.
    match AvcConfig::parse(data) {
        Ok(cfg) => {
            assert!(cfg.width > 0 && cfg.height > 0);
            assert!((1..=4).contains(&cfg.nal_length_size));
            assert!(!cfg.sps.is_empty());
            assert_eq!(cfg.sps[0].first().map(|b| b & 0x1f), Some(7));
            assert!(cfg.sps.iter().chain(cfg.pps.iter()).all(|n| !n.is_empty()));
            assert_eq!((cfg.profile_idc, cfg.profile_compat, cfg.level_idc), (data[1], data[2], data[3]));

            let mut out = vec![0xAB];
            write_annexb_parameter_sets(&cfg, &mut out);
            let expected: usize = cfg.sps.iter().chain(cfg.pps.iter()).map(|n| n.len() + 4).sum();
            assert_eq!(out.len(), 1 + expected);
            // The parameter sets written are themselves a valid AVCC sample once re-prefixed.
            let mut pos = 1;
            for nal in cfg.sps.iter().chain(cfg.pps.iter()) {
                assert_eq!(&out[pos..pos + 4], &START_CODE);
                assert_eq!(&out[pos + 4..pos + 4 + nal.len()], &nal[..]);
                pos += 4 + nal.len();
            }

            let codec = cfg.codec_string();
            assert_eq!(codec.len(), "avc1.64001f".len());
            assert!(codec.starts_with("avc1."));
            assert!(codec[5..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }

    // 2. First byte selects the NAL length size (1..=4) and a prefix already in `out`; the rest is a sample.
    let Some((&sel, sample)) = data.split_first() else {
        return;
    };
    let nls = sel % 4 + 1;
    let prefix = vec![0xEE; usize::from(sel >> 6)];
    let mut out = prefix.clone();
    let result = avcc_to_annexb(sample, nls, &mut out);
    match (result, reference(sample, usize::from(nls))) {
        (Ok(summary), Some((annexb, count, types))) => {
            assert_eq!(&out[..prefix.len()], &prefix[..]);
            assert_eq!(&out[prefix.len()..], &annexb[..]);
            assert_eq!(summary.nal_count, count);
            assert_eq!(summary.has_idr, types[5]);
            assert_eq!(summary.has_sps, types[7]);
            assert_eq!(summary.has_pps, types[8]);
            assert_eq!(summary.has_aud, types[9]);
        }
        (Err(e), None) => {
            assert_eq!(out, prefix, "output not restored after error {e}");
            let _ = e.to_string();
        }
        (Ok(s), None) => panic!("accepted a malformed sample: {s:?}"),
        (Err(e), Some(_)) => panic!("rejected a well-formed sample: {e}"),
    }

    // Invalid length sizes are refused without touching `out`.
    for bad in [0u8, 5, sel.max(5)] {
        let mut out = prefix.clone();
        assert!(avcc_to_annexb(sample, bad, &mut out).is_err());
        assert_eq!(out, prefix);
    }
});
