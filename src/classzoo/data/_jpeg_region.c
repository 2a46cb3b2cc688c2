/* A window of a JPEG, decoded by libjpeg-turbo without decoding the rest of the image.
 *
 * Training crops use a third of an ImageNet photo on average, yet a whole-image decode
 * (simplejpeg, PIL, TF) runs the inverse DCT, upsampling and colour conversion of every pixel
 * and the entropy decoding of every row. libjpeg-turbo's scanline API (>= 1.5) avoids most of
 * that: jpeg_crop_scanline() limits the IDCT, upsampling and colour conversion to the columns
 * of the window (widened to iMCU boundaries), jpeg_skip_scanlines() skips them for the rows
 * above it, and the rows below it are not read at all (the decode stops there).
 *
 * The pixels are those of a whole-image decode with the same settings (TF's IFAST DCT or
 * ISLOW, fancy upsampling, 1/denom DCT scaling), bit for bit, except one thing this file
 * corrects: libjpeg upsamples the chroma of a cropped scanline as if the crop's first and last
 * columns were the image's edges. The window is therefore widened by one column on each side
 * before the crop, and the caller takes only the columns it asked for
 * (tests/test_jpeg_region.py compares every window against the whole image).
 *
 * Any libjpeg warning (corrupt data) or error fails the call with its message: the caller then
 * decodes the whole file as before, with that path's rules for damaged files.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>

#include <jpeglib.h>

#if !defined(LIBJPEG_TURBO_VERSION_NUMBER) || LIBJPEG_TURBO_VERSION_NUMBER < 1005000
#error "needs libjpeg-turbo >= 1.5 (jpeg_crop_scanline, jpeg_skip_scanlines)"
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
        jpeg_destroy_decompress(&cinfo);
        free(rows);
        Py_XDECREF(out);
        PyBuffer_Release(&in);
        PyErr_SetString(PyExc_ValueError, err.message);
        return NULL;
    }
    jpeg_mem_src(&cinfo, (const unsigned char *)in.buf, (unsigned long)in.len);
    jpeg_read_header(&cinfo, TRUE);
    cinfo.out_color_space = JCS_RGB; /* libjpeg refuses CMYK / YCCK sources: an error */
    cinfo.dct_method = fastdct ? JDCT_IFAST : JDCT_ISLOW;
    cinfo.do_fancy_upsampling = TRUE;
    cinfo.scale_num = 1;
    cinfo.scale_denom = (unsigned int)denom;
    jpeg_start_decompress(&cinfo);
    JDIMENSION height = cinfo.output_height, width = cinfo.output_width;
    JDIMENSION stop = (JDIMENSION)bottom < height ? (JDIMENSION)bottom : height;
    JDIMENSION end = (JDIMENSION)right < width ? (JDIMENSION)right : width;
    if ((JDIMENSION)top >= stop || (JDIMENSION)left >= end) {
        jpeg_destroy_decompress(&cinfo);
        PyBuffer_Release(&in);
        PyErr_SetString(PyExc_ValueError, "the window lies outside the image");
        return NULL;
    }
    /* one more column each side: the crop's own edge columns are upsampled as image edges */
    JDIMENSION x0 = left > 0 ? (JDIMENSION)left - 1 : 0;
    JDIMENSION w = (end < width ? end + 1 : end) - x0;
    if (x0 > 0 || w < width) jpeg_crop_scanline(&cinfo, &x0, &w);
    JDIMENSION h = stop - (JDIMENSION)top;
    Py_ssize_t stride = (Py_ssize_t)w * 3;
    out = PyByteArray_FromStringAndSize(NULL, stride * (Py_ssize_t)h);
    rows = (JSAMPROW *)malloc(sizeof(JSAMPROW) * h);
    if (out == NULL || rows == NULL) {
        jpeg_destroy_decompress(&cinfo);
        free(rows);
        Py_XDECREF(out);
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
    if (m != NULL && PyModule_AddStringConstant(m, "LIBJPEG_TURBO_VERSION", STR(LIBJPEG_TURBO_VERSION)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
