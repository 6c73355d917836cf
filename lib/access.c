/* SPDX-License-Identifier: MIT */
/*
 * access.c - bounds-checked accessors.
 *
 * The word accessors are inline in safemap.h (bounds check, one volatile
 * access, one load of the window's state word); the exported functions here
 * are the same code for callers that cannot inline (other languages,
 * function pointers, SM_NO_INLINE).  The state word is checked after the
 * access: a nonzero state (a vanished page, see fault handling) sends the
 * call to sm__access_fail, which returns the precise error.  sm_guarded, the
 * raw-pointer access under the same guard, lives here too.
 */
#include <errno.h>
#include <string.h>

#include "safemap-internal.h"

/* Returns the error of an access that failed a fast-path check, or 0 when
 * the access itself was fine (a slice whose window lost a page elsewhere). */
int sm__access_fail(const sm_slice *s, uint64_t off, uint64_t n, int write)
{
	int rc;

	if (!s || n == 0)
		return -EINVAL;
	if ((rc = sm_slice_error(s)) < 0)
		return rc;
	if (write && !s->write)
		return -EBADF;
	if (off >= s->len || n > s->len - off)
		return -ERANGE;
	return 0;
}

int sm_read(const sm_slice *s, uint64_t off, void *dst, size_t n)
{
	int rc;

	if (!s || !dst || n == 0)
		return -EINVAL;
	if (off >= s->len || n > s->len - off)
		return sm__access_fail(s, off, n, 0);
	memcpy(dst, s->v.base + off, n);
	if (*s->v.state && (rc = sm__access_fail(s, off, n, 0)) < 0)
		return rc;
	return 0;
}

int sm_write(sm_slice *s, uint64_t off, const void *src, size_t n)
{
	int rc;

	if (!s || !src || n == 0)
		return -EINVAL;
	if (!s->write || off >= s->len || n > s->len - off)
		return sm__access_fail(s, off, n, 1);
	memcpy(s->v.base + off, src, n);
	if (*s->v.state && (rc = sm__access_fail(s, off, n, 1)) < 0)
		return rc;
	sm_dirty_set(s, off, n);
	return 0;
}

int sm_fill(sm_slice *s, uint64_t off, int byte, size_t n)
{
	int rc;

	if (!s || n == 0 || byte < 0 || byte > 255)
		return -EINVAL;
	if (!s->write || off >= s->len || n > s->len - off)
		return sm__access_fail(s, off, n, 1);
	memset(s->v.base + off, byte, n);
	if (*s->v.state && (rc = sm__access_fail(s, off, n, 1)) < 0)
		return rc;
	sm_dirty_set(s, off, n);
	return 0;
}

/* Raw bytes under the guard: the fault handler never unwinds (fault.c), so
 * fn runs to its end and the damage, if any, is read from the state word
 * like after any access. */
int sm_guarded(sm_slice *s, int (*fn)(void *p, size_t n, void *arg), void *arg)
{
	int rc, err;

	if (!s || !fn)
		return -EINVAL;
	if ((rc = sm_slice_error(s)) < 0)
		return rc;
	rc = fn(s->v.base, (size_t)s->len, arg);
	if (*s->v.state && (err = sm_slice_error(s)) < 0)
		return err;
	return rc;
}

#define SM__EXPORT_WORD(bits, name)                                                   \
	int(sm_get_u##bits##name)(const sm_slice *s, uint64_t off, uint##bits##_t *out) \
	{                                                                             \
		return sm__inline_get_u##bits##name(s, off, out);                     \
	}                                                                             \
	int(sm_put_u##bits##name)(sm_slice *s, uint64_t off, uint##bits##_t v)        \
	{                                                                             \
		return sm__inline_put_u##bits##name(s, off, v);                       \
	}
#define SM__EXPORT_ALL(bits)      \
	SM__EXPORT_WORD(bits, )   \
	SM__EXPORT_WORD(bits, _le) \
	SM__EXPORT_WORD(bits, _be)
SM__EXPORT_ALL(8)
SM__EXPORT_ALL(16)
SM__EXPORT_ALL(32)
SM__EXPORT_ALL(64)
