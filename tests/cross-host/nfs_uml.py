# SPDX-License-Identifier: MIT
"""NFSv4.2 through user-mode-Linux guests (not written yet)."""


def nfs(workdir, builddir, srcdir, xpeer, local_cost, run):
    run.result("nfs", "uml_guests_and_ganesha_up", False, "not implemented yet")
