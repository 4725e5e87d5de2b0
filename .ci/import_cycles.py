#!/usr/bin/env python3
"""Fails when two files of src/ import each other, directly or through others (docs/architecture.md).

Usage: import_cycles.py [src] [-v]   (-v also prints every file's imports)
"""
import os, re, sys, itertools
args = [a for a in sys.argv[1:] if not a.startswith('-')]
root = args[0] if args else 'src'
files = {}
for dp, _, fs in os.walk(root):
    for f in fs:
        if f.endswith('.rs'):
            p = os.path.join(dp, f)
            rel = os.path.relpath(p, root)[:-3]
            mod = rel.replace(os.sep, '::')
            if mod.endswith('::mod'): mod = mod[:-5]
            if mod in ('lib', 'main'): mod = 'crate'
            files[mod] = p
mods = set(files)
def resolve(path):
    parts = path.split('::')
    best = None
    for i in range(len(parts), 0, -1):
        cand = '::'.join(parts[:i])
        if cand in mods: return cand
    return None
edges = {m: set() for m in mods}
for m, p in files.items():
    src = open(p).read()
    # strip test modules roughly
    cut = src.find('#[cfg(test)]')
    if cut >= 0: src = src[:cut]
    # Comments name modules without importing them.
    src = re.sub(r'//[^\n]*', '', src)
    parent = m.rsplit('::', 1)[0] if '::' in m else ''
    for ref in re.findall(r'crate::([A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*)', src):
        t = resolve(ref)
        if t and t != m and t != 'crate': edges[m].add(t)
    for ref in re.findall(r'\bsuper::([A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*)', src):
        base = m.rsplit('::',1)[0] if '::' in m else ''
        # for mod.rs files, super is the parent of the module
        if files[m].endswith('mod.rs'):
            base = base.rsplit('::',1)[0] if '::' in base else ''
        full = (base + '::' + ref) if base else ref
        t = resolve(full)
        if t and t != m: edges[m].add(t)
# cycles via Tarjan SCC
index = {}; low = {}; stack = []; on = set(); sccs = []; c = [0]
sys.setrecursionlimit(10000)
def strong(v):
    index[v] = low[v] = c[0]; c[0] += 1; stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index: strong(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(comp)
for v in sorted(mods):
    if v not in index: strong(v)
if '-v' in sys.argv:
    for m in sorted(edges): print(m, '->', ', '.join(sorted(edges[m])))
for comp in sccs:
    print('CYCLE:', ' '.join(sorted(comp)))
    for a in sorted(comp):
        print('   ', a, '->', ', '.join(sorted(x for x in edges[a] if x in comp)))
print(len(sccs), 'import cycles in', root)
sys.exit(1 if sccs else 0)
