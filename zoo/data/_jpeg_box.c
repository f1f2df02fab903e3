/* zoo.data._jpeg_box: decode only a box of a baseline or progressive JPEG, through the system's libjpeg
 * (libjpeg-turbo >= 1.5: jpeg_skip_scanlines and jpeg_crop_scanline).
 *
 * Hand-written because no installable Python package decodes part of a JPEG (simplejpeg, Pillow, OpenCV and
 * torchvision decode whole images; TurboJPEG's own cropping region is version 3, newer than Debian's 2.1).
 * The rows below the box are never decoded, the rows above it are entropy-decoded only, and the columns
 * outside it skip the inverse DCT, upsampling and colour conversion. zoo/data/images.py measures the gain
 * and falls back to a whole decode when this module was not built (no libjpeg headers at install time).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <setjmp.h>
#include <stdio.h>
#include <jpeglib.h>

#define BOX_MARGIN 8

struct box_error {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    int warned;
    char message[JMSG_LENGTH_MAX];
};

static void box_error_exit(j_common_ptr cinfo)
{
    struct box_error *err = (struct box_error *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

static void box_warning(j_common_ptr cinfo, int level)
{
    /* a warning (corrupt data, a premature end) fails the decode, as simplejpeg's strict mode does, so that
     * the caller's whole decode names the damaged file; trace messages (level > 0) are ignored */
    struct box_error *err = (struct box_error *)cinfo->err;
    if (level < 0 && err->warned == 0) {
        err->warned = 1;
        (*cinfo->err->format_message)(cinfo, err->message);
    }
}

/* decode(data, top, left, height, width) -> (pixels: bytearray, x: int, columns: int)
 *
 * pixels are RGB rows top..top+height-1 of columns x..x+columns-1, where x <= left and
 * x + columns >= left + width (the box widened by a margin and to whole blocks), each pixel as a whole
 * decode by the same libjpeg gives it. ValueError when libjpeg cannot decode the file, warns about its
 * data, or cannot convert its colours to RGB (CMYK); the caller then decodes it another way. Damage below
 * the box goes unseen: those rows are never read. */
static PyObject *box_decode(PyObject *self, PyObject *args)
{
    Py_buffer data;
    int top, left, height, width;
    if (!PyArg_ParseTuple(args, "y*iiii", &data, &top, &left, &height, &width))
        return NULL;

    struct jpeg_decompress_struct cinfo;
    struct box_error err;
    /* volatile: set after setjmp and read after a longjmp */
    PyObject *volatile pixels = NULL;
    volatile JDIMENSION x = 0, columns = 0;
    volatile int failed = 0;

    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = box_error_exit;
    err.mgr.emit_message = box_warning;
    err.warned = 0;
    err.message[0] = '\0';
    jpeg_create_decompress(&cinfo);

    if (setjmp(err.jump)) {
        failed = 1;
        goto done;
    }
    jpeg_mem_src(&cinfo, (const unsigned char *)data.buf, (unsigned long)data.len);
    jpeg_read_header(&cinfo, TRUE);
    cinfo.out_color_space = JCS_RGB;
    if (top < 0 || left < 0 || height <= 0 || width <= 0 || (JDIMENSION)(top + height) > cinfo.image_height
        || (JDIMENSION)(left + width) > cinfo.image_width) {
        snprintf(err.message, sizeof err.message, "box (%d, %d, %d, %d) outside the %ux%u image", top, left,
                 height, width, cinfo.image_height, cinfo.image_width);
        failed = 1;
        goto done;
    }
    jpeg_start_decompress(&cinfo);
    /* libjpeg upsamples chroma at a crop's sides as at an image's edges, which changes the first or last
     * column of the box from what a whole decode gives; a margin of columns keeps every box pixel the same */
    JDIMENSION start = left > BOX_MARGIN ? (JDIMENSION)(left - BOX_MARGIN) : 0;
    JDIMENSION stop = (JDIMENSION)(left + width + BOX_MARGIN);
    if (stop > cinfo.output_width)
        stop = cinfo.output_width;
    JDIMENSION crop_x = start, crop_columns = stop - start;
    jpeg_crop_scanline(&cinfo, &crop_x, &crop_columns);
    x = crop_x;
    columns = crop_columns;

    pixels = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)height * columns * 3);
    if (pixels == NULL)
        goto done;
    unsigned char *out = (unsigned char *)PyByteArray_AS_STRING(pixels);
    /* the GIL is kept: libjpeg's errors longjmp back to the setjmp above, which must not land outside a
     * section that released it (DataLoader workers are processes: there is no other thread to let run) */
    if (top > 0)
        jpeg_skip_scanlines(&cinfo, (JDIMENSION)top);
    while (cinfo.output_scanline < (JDIMENSION)(top + height)) {
        JSAMPROW row = out + (size_t)(cinfo.output_scanline - top) * columns * 3;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    failed = err.warned;

done:
    jpeg_destroy_decompress(&cinfo);
    PyBuffer_Release(&data);
    if (failed) {
        Py_XDECREF(pixels);
        PyErr_SetString(PyExc_ValueError, err.message[0] ? err.message : "cannot decode the JPEG");
        return NULL;
    }
    if (pixels == NULL)
        return NULL;
    return Py_BuildValue("(NII)", pixels, x, columns);
}

static PyMethodDef box_methods[] = {
    {"decode", box_decode, METH_VARARGS,
     "decode(data, top, left, height, width) -> (rgb bytearray, x, columns): rows top..top+height-1 of the "
     "columns x..x+columns-1 (a box widened to whole blocks)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef box_module = {PyModuleDef_HEAD_INIT, "_jpeg_box",
                                        "Decode only a box of a JPEG through libjpeg.", -1, box_methods};

PyMODINIT_FUNC PyInit__jpeg_box(void)
{
    return PyModule_Create(&box_module);
}
