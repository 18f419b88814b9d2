#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""genman.py - man pages of the public calls, from include/shmq.h.

The header is the one source: each public call's doc comment becomes its
page (NAME from the first sentence, SYNOPSIS from the declaration,
DESCRIPTION, RETURN VALUE from the "Returns" part, ERRORS from the -E...
values it names, THREAD SAFETY, EXAMPLE by header section, SEE ALSO the
other calls of its section). A call added to the header with a doc
comment gets its page without anyone writing roff.

  genman.py --list HEADER           names of the pages (one a line)
  genman.py HEADER OUTDIR VERSION   write OUTDIR/<call>.3
"""
import os
import re
import sys

DECL_RE = re.compile(r'\b(shmq_\w+)\s*\(')

# Examples by header section title (a word of it); the first match wins.
EXAMPLES = [
    ('Creating', '''shmq_t *q;
struct shmq_config cfg = {.maxsize = 1024};
int rc = shmq_create_named(&q, "/jobs", &cfg, 0600);
if (rc < 0) {
    fprintf(stderr, "create: %s\\n", shmq_strerror(rc));
    exit(1);
}
if (fork() == 0) {            /* the child inherits the handle */
    shmq_put(q, "hi", 2, SHMQ_FOREVER);
    _exit(0);
}
char buf[64];
size_t len;
rc = shmq_get(q, buf, sizeof buf, &len, SHMQ_SEC(5));
shmq_unlink("/jobs");
shmq_release(q);'''),
    ('Putting', '''char buf[256];
size_t len;
int rc = shmq_put(q, "job 1", 5, SHMQ_MS(100));
if (rc == -ETIMEDOUT)
    ;                           /* full for 100 ms */
while ((rc = shmq_get(q, buf, sizeof buf, &len, SHMQ_FOREVER)) == 0)
    handle(buf, len);
if (rc == -EPIPE)
    ;                           /* closed and drained: done */'''),
    ('State', '''printf("%zu queued of at most %zu bytes each%s\\n", shmq_qsize(q),
       shmq_max_message(q), shmq_full(q) ? " (full)" : "");'''),
    ('Closing', '''/* producer: put the work, then say there is no more */
for (int i = 0; i < n; i++)
    shmq_put(q, &jobs[i], sizeof jobs[i], SHMQ_FOREVER);
shmq_close(q);
/* joinable queue: wait until every job was marked done */
int rc = shmq_join(q, SHMQ_SEC(30));'''),
    ('Tuning', '''shmq_set_spin(q, 0);           /* sleep at once: save CPU */'''),
    ('Event', '''shmq_pollfd_t *pf;
if (shmq_pollfd_open(&pf, q, SHMQ_EV_READABLE) == 0) {
    struct pollfd p = {.fd = shmq_pollfd_fd(pf), .events = POLLIN};
    while (poll(&p, 1, -1) > 0) {
        while (shmq_get_nowait(q, buf, sizeof buf, &len) == 0)
            handle(buf, len);
        shmq_pollfd_ack(pf);
    }
    shmq_pollfd_close(pf);
}'''),
    ('pool', '''static int square(const void *arg, size_t n, void *out, size_t cap,
                  size_t *outlen, void *ctx)
{
    long x = *(const long *)arg;
    *(long *)out = x * x;
    *outlen = sizeof x;
    return 0;
}

shmq_pool_t *p;
uint64_t t;
long x = 7, y;
size_t len;
int status;
shmq_pool_create(&p, NULL);
shmq_pool_submit(p, square, &x, sizeof x, &t, SHMQ_FOREVER);
shmq_pool_wait(p, t, &y, sizeof y, &len, &status, SHMQ_FOREVER);
shmq_pool_close(p);
shmq_pool_join(p, SHMQ_FOREVER);
shmq_pool_destroy(p);'''),
    ('Codecs', '''/* one MessagePack value, encoded with msgpuck's mp_encode_* */
struct shmq_codec mp;
shmq_msgpack_codec(&mp, 0);
struct iovec v = {buf, (size_t)(end - buf)};
int rc = shmq_put_value(q, &mp, &v, SHMQ_FOREVER);

/* take one: copied out, then checked, then safe to mp_decode_* */
char in[4096];
struct iovec out = {in, sizeof in};
rc = shmq_get_value(q, &mp, &out, SHMQ_FOREVER);
if (rc == -EBADMSG)
    ;                           /* not MessagePack: consumed, skipped */'''),
    ('Serial', '''struct iovec parts[2] = {{hdr, sizeof *hdr}, {body, body_len}};
int rc = shmq_putv(q, parts, 2, SHMQ_FOREVER);'''),
    ('', '''printf("shmq %s (header %d.%d.%d)\\n", shmq_version_string(),
       SHMQ_VERSION_MAJOR, SHMQ_VERSION_MINOR, SHMQ_VERSION_PATCH);
int rc = shmq_put_nowait(q, msg, len);
if (rc < 0)
    fprintf(stderr, "put: %s\\n", shmq_strerror(rc));'''),
]

THREADING = {
    'pool': 'A pool handle is used from one thread at a time, and only in '
            'the process that created it. Not async-signal-safe.',
    'Event': 'See the description for what may run concurrently. Not '
             'async-signal-safe.',
    '': 'A queue handle is thread-safe: any number of threads may call '
        'this on one handle at once, and a handle inherited over fork(2) '
        'is usable in the child. Not async-signal-safe.',
}


def parse(text):
    """[(name, section, comment, declaration)] of the public calls."""
    calls = []
    titles = [(m.start(), m.group(1)) for m in re.finditer(
        r'/\* -{20,} \*/\n/\* (.+?)\s*\*/', text)]

    def section_at(pos):
        before = [t for p, t in titles if p < pos]
        return before[-1] if before else ''
    token = re.compile(r'/\*(\*?)(.*?)\*/|;', re.S)
    pending = None
    last_end = 0
    for m in token.finditer(text):
        if m.group(0) == ';':
            decl = text[last_end:m.end()].strip()
            fn = DECL_RE.search(decl)
            if fn and pending is not None and not decl.startswith('#') \
                    and '(*' not in decl.split(fn.group(1))[0]:
                decl = re.sub(r'\s+', ' ', decl)
                calls.append((fn.group(1), section_at(m.start()), pending,
                              decl))
            pending = None
            last_end = m.end()
            continue
        body = m.group(2)
        if not m.group(1):
            last_end = m.end()
            continue
        lines = [re.sub(r'^\s*\* ?', '', l) for l in body.split('\n')]
        pending = '\n'.join(lines).strip()
        last_end = m.end()
    return calls


def esc(s):
    s = s.replace('\\', '\\e')
    s = re.sub(r'(?<![\w])-(?=[A-Z0-9])', r'\\-', s)
    return s


def para_lines(s):
    out = []
    for l in s.split('\n'):
        l = esc(l)
        if l.startswith('.') or l.startswith("'"):
            l = '\\&' + l
        out.append(l)
    return out


def render_text(text):
    """Paragraphs; runs of indented lines as preformatted blocks."""
    out, block, pre = [], [], None
    def flush():
        nonlocal block, pre
        if not block:
            return
        if pre:
            out.extend(['.RS 2', '.nf'] + para_lines('\n'.join(block)) + ['.fi', '.RE'])
        else:
            out.extend(['.PP'] + para_lines(' '.join(x.strip() for x in block)))
        block = []
    for l in text.split('\n'):
        if not l.strip():
            flush(); pre = None
            continue
        is_pre = l.startswith('  ')
        if pre is not None and is_pre != pre:
            flush()
        pre = is_pre
        block.append(l if is_pre else l)
    flush()
    return out


RET_RE = re.compile(r'(?:(?<=^)|(?<=\n)|(?<=[.:] ))(Returns?\b)')


def split_returns(comment):
    m = RET_RE.search(comment)
    if not m:
        return comment, ''
    return comment[:m.start()].rstrip(), comment[m.start():]


def errors_of(comment):
    errs = {}
    # "  -EINVAL    why", continued on more deeply indented lines
    lines = comment.split('\n')
    for i, l in enumerate(lines):
        m = re.match(r'^(\s+)(-E[A-Z]+(?:[,/ ]+-E[A-Z]+)*)\s+(.*)$', l)
        if not m:
            continue
        why = m.group(3).strip()
        for c in lines[i + 1:]:
            if not c.startswith(m.group(1) + '  ') or c.strip().startswith('-'):
                break
            why += ' ' + c.strip()
        for e in re.findall(r'-E[A-Z]+', m.group(2)):
            errs.setdefault(e, why)
    for m in re.finditer(r'(-E[A-Z]+)(?:/-E[A-Z]+)*\s*\(([^()]*(?:\([^()]*\)[^()]*)*)\)', comment):
        errs.setdefault(m.group(1), re.sub(r'\s+', ' ', m.group(2)))
    for e in re.findall(r'-E[A-Z]+', comment):
        errs.setdefault(e, '')
    return errs


ALIAS_RE = re.compile(r'^(shmq_\w+)\((.*)\)\.?$', re.S)


def summary(comment, name):
    alias = ALIAS_RE.match(comment)
    if alias:
        return f'shorthand for {alias.group(1)}({alias.group(2)})'
    first = re.split(r'(?<=[.:])\s', comment.replace('\n', ' '), 1)[0].strip()
    first = first.rstrip('.:')
    if len(first) > 1 and first[0].isupper() and first[1].islower():
        first = first[0].lower() + first[1:]
    return first if len(first) < 110 else first[:107].rsplit(' ', 1)[0] + '...'


def pick(table, section):
    for key, val in table if isinstance(table, list) else table.items():
        if key and key.lower() in section.lower():
            return val
    return dict(table)[''] if isinstance(table, dict) else table[-1][1]


def page(call, calls, version):
    name, section, comment, decl = call
    alias = ALIAS_RE.match(comment)
    if alias:
        # "shmq_put(q, msg, len, SHMQ_NOWAIT)." : the other call's rules
        target = next((c for c in calls if c[0] == alias.group(1)), None)
        if target:
            comment = (f'The same as {comment.rstrip(".")}: see '
                       f'{target[0]}(3), whose rules it follows.\n\n'
                       + split_returns(target[2])[1])
    desc, ret = split_returns(comment)
    if decl.startswith('void ') and not ret:
        ret = 'None (void).'
    out = ['.\\" Generated by man/genman.py from include/shmq.h: edit the header.',
           f'.TH {name.upper()} 3 "" "shmq {version}" "shmq manual"',
           '.SH NAME', f'{esc(name)} \\- {esc(summary(comment, name))}',
           '.SH SYNOPSIS', '.nf', '.B #include <shmq.h>', '.PP']
    out += para_lines(decl)
    out += ['.fi', '.PP', 'Link with \\fI\\-lshmq\\fP (pkg-config shmq).',
            '.SH DESCRIPTION']
    out += render_text(desc or comment)
    out += ['.SH RETURN VALUE']
    out += render_text(ret) if ret else ['.PP', 'See DESCRIPTION.']
    errs = errors_of(comment)
    out += ['.SH ERRORS']
    if errs:
        for e, why in errs.items():
            out += ['.TP', f'.B {esc(e)}'] + (para_lines(why) if why else ['See RETURN VALUE.'])
    else:
        out += ['.PP', 'None: this call cannot fail.']
    out += ['.SH THREAD SAFETY', '.PP']
    out += para_lines(pick(THREADING, section))
    sentences = [s for s in re.split(r'(?<=\.)\s+', comment.replace('\n', ' '))
                 if re.search(r'[Tt]hread|[Bb]lock|fork', s)]
    if sentences:
        out += ['.PP'] + para_lines(' '.join(sentences))
    out += ['.SH EXAMPLE', '.PP', '.nf', '.RS 4']
    out += para_lines(pick(EXAMPLES, section))
    out += ['.RE', '.fi']
    others = [c[0] for c in calls if c[1] == section and c[0] != name]
    out += ['.SH SEE ALSO', ', '.join(f'.BR {o} (3)'.replace('.BR ', '\\fB') .replace(' (3)', '\\fP(3)') for o in others[:12]) + (', ' if others else '') + '\\fBshmq\\fP(7)']
    return '\n'.join(out) + '\n'


def main():
    if sys.argv[1] == '--list':
        for c in parse(open(sys.argv[2]).read()):
            print(c[0] + '.3')
        return
    header, outdir, version = sys.argv[1:4]
    calls = parse(open(header).read())
    os.makedirs(outdir, exist_ok=True)
    for c in calls:
        with open(os.path.join(outdir, c[0] + '.3'), 'w') as f:
            f.write(page(c, calls, version))


if __name__ == '__main__':
    main()
