//! The C inflate backends compared in the stage benchmarks, through their raw FFI: ISA-L's
//! igzip and zlib-ng's native API. Benchmark-only; rdpull itself uses neither.
#![allow(unsafe_code)] // FFI to C libraries; each call says why it is sound.

/// ISA-L's igzip through isal-sys: one gzip member inflated into `out` piece by piece,
/// each piece handed to `each`. Returns the bytes produced.
pub(crate) fn igzip_gunzip(gz: &[u8], out: &mut [u8], mut each: impl FnMut(&[u8])) -> usize {
    use isal_sys::igzip_lib as isal;
    let mut state = Box::<isal::inflate_state>::new_uninit();
    // SAFETY: isal_inflate_init initialises the whole state.
    let mut state = unsafe {
        isal::isal_inflate_init(state.as_mut_ptr());
        state.assume_init()
    };
    state.crc_flag = isal::IGZIP_GZIP;
    state.next_in = gz.as_ptr().cast_mut();
    state.avail_in = gz.len() as u32;
    let mut total = 0;
    loop {
        state.next_out = out.as_mut_ptr();
        state.avail_out = out.len() as u32;
        // SAFETY: next_in/next_out describe live buffers of the stated lengths.
        assert_eq!(unsafe { isal::isal_inflate(&mut *state) }, 0);
        let n = out.len() - state.avail_out as usize;
        each(&out[..n]);
        total += n;
        if state.block_state == isal::isal_block_state_ISAL_BLOCK_FINISH {
            return total;
        }
    }
}

/// zlib-ng through its native API (libz-ng-sys): gzip members inflated into `out` piece by
/// piece, as `drain` does for the streaming readers. Returns the bytes produced.
pub(crate) fn zlib_ng_gunzip(gz: &[u8], out: &mut [u8]) -> usize {
    use libz_ng_sys as z;
    use std::ptr::null_mut;
    unsafe extern "C" fn zalloc(_: z::voidpf, items: z::uInt, size: z::uInt) -> z::voidpf {
        // SAFETY: plain C allocation, freed by `zfree`.
        unsafe { libc::calloc(items as usize, size as usize) }
    }
    unsafe extern "C" fn zfree(_: z::voidpf, p: z::voidpf) {
        // SAFETY: `p` came from `zalloc`.
        unsafe { libc::free(p) }
    }
    let mut s = z::z_stream {
        next_in: gz.as_ptr().cast_mut(),
        avail_in: gz.len() as z::uInt,
        total_in: 0,
        next_out: null_mut(),
        avail_out: 0,
        total_out: 0,
        msg: null_mut(),
        state: null_mut(),
        zalloc,
        zfree,
        opaque: null_mut(),
        data_type: 0,
        adler: 0,
        reserved: 0,
    };
    let size = std::mem::size_of::<z::z_stream>() as i32;
    // SAFETY: `s` is a valid stream; 15 + 16 selects the gzip wrapper.
    let ret = unsafe { z::inflateInit2_(&mut s, 15 + 16, z::zlibVersion(), size) };
    assert_eq!(ret, z::Z_OK);
    let mut total = 0;
    loop {
        s.next_out = out.as_mut_ptr();
        s.avail_out = out.len() as z::uInt;
        // SAFETY: next_in/next_out describe live buffers of the stated lengths.
        let ret = unsafe { z::inflate(&mut s, z::Z_NO_FLUSH) };
        total += out.len() - s.avail_out as usize;
        match ret {
            z::Z_OK => {}
            // Another member may follow, as in a multi-member layer.
            z::Z_STREAM_END if s.avail_in > 0 => {
                // SAFETY: the stream is initialised.
                assert_eq!(unsafe { z::inflateReset(&mut s) }, z::Z_OK)
            }
            z::Z_STREAM_END => break,
            other => panic!("zlib-ng inflate: {other}"),
        }
    }
    // SAFETY: initialised above.
    unsafe { z::inflateEnd(&mut s) };
    total
}
