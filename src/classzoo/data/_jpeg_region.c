/* A window of a JPEG, decoded by libjpeg-turbo without decoding the rest of the image.
 *
 * A training crop reads part of a photo (28 % of a 500x375 one for slim vgg, on average), yet a
 * whole-image decode (simplejpeg, PIL, TF) runs the inverse DCT, upsampling and colour
 * conversion of every pixel and the entropy decoding of every row. libjpeg-turbo's scanline API
 * avoids most of that: jpeg_crop_scanline() limits the IDCT, upsampling and colour conversion to the columns
 * of the window (widened to iMCU boundaries), jpeg_skip_scanlines() skips them for the rows
 * above it, and the rows below it are not read at all (the decode stops there).
 *
 * The pixels are those of a whole-image decode with the same settings (TF's IFAST DCT or
 * ISLOW, fancy upsampling, 1/denom DCT scaling), bit for bit, except one thing this file
 * corrects: libjpeg upsamples the chroma of a cropped scanline as if the crop's first and last
 * columns were the image's edges (and by replication where a crop is 1 chroma sample wide). The
 * window is therefore widened by one column on each side, and to at least 3 iMCUs, before the
 * crop, and the caller takes only the columns it asked for (tests/test_jpeg_region.py compares
 * windows against the whole image).
 *
 * What a window decode cannot see, it refuses, and the caller then decodes the whole file as
 * before, by that path's rules for damaged files (tests/test_jpeg_region.py compares the two on
 * damaged files): any libjpeg warning or error; a single-scan file whose data after the scan is
 * not APP1-APP15 or COM segments and then its end-of-image marker at the end (two SOI markers, a
 * second frame, a table libjpeg would parse and refuse: what a whole decode meets only after the
 * last row); a progressive file whose coefficients are incomplete (libjpeg's block smoothing
 * reads neighbouring blocks across the crop's edge, and its arithmetic changed in libjpeg-turbo
 * 3.0.1); and, before 3.0.0, a
 * component subsampled other than 1 or 2 times on either axis (a crop of a scaled 4x2 / 2x4
 * image read uninitialised memory there). Corrupt entropy-coded data below the window is not
 * seen: a whole decode warns about it and, the file ending properly, decodes it anyway.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

/* 1.5 brought jpeg_crop_scanline / jpeg_skip_scanlines; before 2.0.3 they could loop forever
 * on progressive subsampled files, crop greyscale wrongly, and rounded 4:4:0 otherwise */
#if !defined(LIBJPEG_TURBO_VERSION_NUMBER) || LIBJPEG_TURBO_VERSION_NUMBER < 2000003
#error "needs libjpeg-turbo >= 2.0.3"
#endif
#if JPEG_LIB_VERSION >= 70 /* libjpeg-turbo built with the jpeg7 / jpeg8 API */
#define MIN_DCT_SCALED_SIZE(cinfo) ((cinfo).min_DCT_h_scaled_size)
#else
#define MIN_DCT_SCALED_SIZE(cinfo) ((cinfo).min_DCT_scaled_size)
#endif

#define STR_(x) #x
#define STR(x) STR_(x)

struct error_mgr {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
    int warned;
};

static void on_error(j_common_ptr cinfo) {
    struct error_mgr *err = (struct error_mgr *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
    struct error_mgr *err = (struct error_mgr *)cinfo->err;
    if (level < 0 && !err->warned) { /* a warning: corrupt data libjpeg decoded around */
        (*cinfo->err->format_message)(cinfo, err->message);
        err->warned = 1;
    }
}

/* Whether the bytes from ``i`` (a single-scan file's entropy-coded data) end as a whole decode
 * accepts: the scan's data, then only APP1-APP15 or COM segments (libjpeg skips or saves them
 * unread), then EOI as the last bytes but zeros. Anything else is left to the whole decode: SOI,
 * SOF, SOS, DNL, garbage, and the segments libjpeg parses and may refuse or warn about (DHT,
 * DQT, DRI: a table after the only scan serves nothing; APP0: an unknown JFIF version). */
static int ends_cleanly(const unsigned char *p, size_t n, size_t i) {
    while (n > 0 && p[n - 1] == 0) n--;
    for (;;) { /* the entropy-coded data: FF 00 is a stuffed byte, FF D0..D7 a restart marker */
        const unsigned char *ff = i < n ? memchr(p + i, 0xFF, n - i) : NULL;
        if (ff == NULL) return 0;
        i = (size_t)(ff - p);
        while (i + 1 < n && p[i + 1] == 0xFF) i++; /* fill bytes */
        if (i + 1 >= n) return 0;
        if (p[i + 1] != 0x00 && (p[i + 1] < 0xD0 || p[i + 1] > 0xD7)) break;
        i += 2;
    }
    for (;;) { /* p[i] = FF, p[i + 1] = a marker */
        unsigned char m = p[i + 1];
        if (m == 0xD9) return i + 2 == n;
        if (!(m == 0xFE || (m >= 0xE1 && m <= 0xEF))) return 0;
        if (i + 4 > n) return 0;
        size_t length = ((size_t)p[i + 2] << 8) | p[i + 3];
        if (length < 2) return 0;
        i += 2 + length;
        while (i + 1 < n && p[i] == 0xFF && p[i + 1] == 0xFF) i++; /* fill bytes */
        if (i + 1 >= n || p[i] != 0xFF) return 0;
    }
}

/* Whether a window decode of this (started) image gives the whole decode's pixels; else why
 * not, for the caller's ValueError. */
static const char *refusal(j_decompress_ptr cinfo, const unsigned char *data, size_t size,
                           size_t scan_start) {
    if (((struct error_mgr *)cinfo->err)->warned) /* in the header or, multi-scan, all scans */
        return ((struct error_mgr *)cinfo->err)->message;
    if (cinfo->progressive_mode) {
        for (int c = 0; c < cinfo->num_components; c++)
            for (int k = 0; k < DCTSIZE2; k++)
                if (cinfo->coef_bits[c][k] != 0) return "a progressive JPEG with incomplete scans";
    } else if (!jpeg_has_multiple_scans(cinfo) && !ends_cleanly(data, size, scan_start)) {
        return "a JPEG whose data after its scan is not tables then its end marker";
    }
#if LIBJPEG_TURBO_VERSION_NUMBER < 3000000
    for (int c = 0; c < cinfo->num_components; c++) {
        jpeg_component_info *comp = &cinfo->comp_info[c];
        int h = cinfo->max_h_samp_factor / comp->h_samp_factor;
        int v = cinfo->max_v_samp_factor / comp->v_samp_factor;
        if (h > 2 || v > 2 || h * comp->h_samp_factor != cinfo->max_h_samp_factor ||
            v * comp->v_samp_factor != cinfo->max_v_samp_factor)
            return "a JPEG subsampled other than 1 or 2 times (libjpeg-turbo < 3.0 crops it wrongly)";
    }
#endif
    return NULL;
}

/* The columns to crop for a window of columns left..end-1 of a started decode, in *x0, *w. */
static void crop_columns(j_decompress_ptr cinfo, JDIMENSION left, JDIMENSION end,
                         JDIMENSION *x0, JDIMENSION *w) {
    /* One more column each side: the crop's own edge columns are upsampled as image edges. And
     * at least 3 iMCUs (the crop's alignment): a crop of one iMCU at a scaled image's edge can
     * leave a chroma row 1 sample wide, which libjpeg upsamples by replication (jdapistd.c
     * rebuilds the upsampler for a crop; 3 is a margin over the exact limit). */
    JDIMENSION width = cinfo->output_width;
    JDIMENSION lo = left > 0 ? left - 1 : 0, hi = end < width ? end + 1 : end;
    JDIMENSION least = 3 * (JDIMENSION)(MIN_DCT_SCALED_SIZE(*cinfo) * cinfo->max_h_samp_factor);
    if (hi - lo < least) {
        lo = hi > least ? hi - least : 0;
        hi = lo + least < width ? lo + least : width;
    }
    *x0 = lo;
    *w = hi - lo;
    if (*x0 > 0 || *w < width) jpeg_crop_scanline(cinfo, x0, w); /* widens to the iMCU grid */
}

static PyObject *fail(j_decompress_ptr cinfo, Py_buffer *in, const char *why) {
    jpeg_destroy_decompress(cinfo);
    PyBuffer_Release(in);
    PyErr_SetString(PyExc_ValueError, why);
    return NULL;
}

/* decode_window(data, denom, fastdct, top, bottom, left, right)
 *   -> (pixels: bytearray, height, width, x0)
 * Rows top..bottom-1 of the image decoded at 1/denom (denom 1, 2, 4 or 8), columns x0..x0+width-1,
 * a range that contains left..right-1 (all in the scaled image's pixels; bottom and right are
 * clipped to it). pixels: height x width x 3 RGB bytes, row-major. */
static PyObject *decode_window(PyObject *self, PyObject *args) {
    Py_buffer in;
    int denom, fastdct, top, bottom, left, right;
    if (!PyArg_ParseTuple(args, "y*ipiiii", &in, &denom, &fastdct, &top, &bottom, &left, &right))
        return NULL;
    if ((denom != 1 && denom != 2 && denom != 4 && denom != 8) || top < 0 || left < 0 ||
        bottom <= top || right <= left) {
        PyBuffer_Release(&in);
        PyErr_SetString(PyExc_ValueError, "denom must be 1, 2, 4 or 8 and the window not empty");
        return NULL;
    }
    struct jpeg_decompress_struct cinfo;
    struct error_mgr err;
    PyObject *volatile out = NULL;
    JSAMPROW *volatile rows = NULL;
    PyThreadState *volatile released = NULL;
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_error;
    err.pub.emit_message = on_message;
    err.warned = 0;
    err.message[0] = '\0';
    jpeg_create_decompress(&cinfo);
    if (setjmp(err.jump)) {
        if (released != NULL) PyEval_RestoreThread(released);
        free(rows);
        Py_XDECREF(out);
        return fail(&cinfo, &in, err.message);
    }
    jpeg_mem_src(&cinfo, (const unsigned char *)in.buf, (unsigned long)in.len);
    jpeg_read_header(&cinfo, TRUE); /* stops after the first SOS: its scan's data comes next */
    size_t scan_start = (size_t)(cinfo.src->next_input_byte - (const JOCTET *)in.buf);
    cinfo.out_color_space = JCS_RGB; /* libjpeg refuses CMYK / YCCK sources: an error */
    cinfo.dct_method = fastdct ? JDCT_IFAST : JDCT_ISLOW;
    cinfo.do_fancy_upsampling = TRUE;
    cinfo.scale_num = 1;
    cinfo.scale_denom = (unsigned int)denom;
    jpeg_start_decompress(&cinfo);
    JDIMENSION height = cinfo.output_height, width = cinfo.output_width;
    JDIMENSION stop = (JDIMENSION)bottom < height ? (JDIMENSION)bottom : height;
    JDIMENSION end = (JDIMENSION)right < width ? (JDIMENSION)right : width;
    const char *why = (JDIMENSION)top >= stop || (JDIMENSION)left >= end
                          ? "the window lies outside the image"
                          : refusal(&cinfo, (const unsigned char *)in.buf, (size_t)in.len, scan_start);
    if (why != NULL) return fail(&cinfo, &in, why);
    JDIMENSION x0, w;
    crop_columns(&cinfo, (JDIMENSION)left, end, &x0, &w);
    JDIMENSION h = stop - (JDIMENSION)top;
    Py_ssize_t stride = (Py_ssize_t)w * 3;
    out = PyByteArray_FromStringAndSize(NULL, stride * (Py_ssize_t)h);
    rows = (JSAMPROW *)malloc(sizeof(JSAMPROW) * h);
    if (out == NULL || rows == NULL) {
        free(rows);
        Py_XDECREF(out);
        jpeg_destroy_decompress(&cinfo);
        PyBuffer_Release(&in);
        return PyErr_NoMemory();
    }
    char *pixels = PyByteArray_AS_STRING(out);
    for (JDIMENSION i = 0; i < h; i++) rows[i] = (JSAMPROW)(pixels + stride * (Py_ssize_t)i);
    released = PyEval_SaveThread(); /* no Python object is touched below until restored */
    if (top > 0) jpeg_skip_scanlines(&cinfo, (JDIMENSION)top);
    while (cinfo.output_scanline < stop)
        jpeg_read_scanlines(&cinfo, rows + (cinfo.output_scanline - top), stop - cinfo.output_scanline);
    jpeg_destroy_decompress(&cinfo); /* the rows below the window are never decoded */
    PyEval_RestoreThread(released);
    released = NULL;
    free(rows);
    PyBuffer_Release(&in);
    if (err.warned) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_ValueError, err.message);
        return NULL;
    }
    return Py_BuildValue("(Niii)", out, (int)h, (int)w, (int)x0);
}

/* decode_window's arguments and results, as data/jpeg_region.py expects them (its _INTERFACE):
 * a module left from an older build, where a rebuild failed, is refused rather than called. */
#define INTERFACE 1

static PyMethodDef methods[] = {
    {"decode_window", decode_window, METH_VARARGS,
     "decode_window(data, denom, fastdct, top, bottom, left, right) -> (pixels, height, width, x0)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_jpeg_region", "A window of a JPEG by libjpeg-turbo's scanline API.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__jpeg_region(void) {
    PyObject *m = PyModule_Create(&module);
    /* the headers' version: the library itself reports only the libjpeg API it emulates (6b) */
    if (m != NULL && (PyModule_AddStringConstant(m, "BUILT_WITH", STR(LIBJPEG_TURBO_VERSION)) < 0 ||
                      PyModule_AddIntConstant(m, "INTERFACE", INTERFACE) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
