/*
** dlist.h: defer.list, defer.gather and defer.race (the C side; the
** functions users call are in src/lua/dlist.lua).
** SPDX-License-Identifier: MIT
*/
#ifndef DEFER_DLIST_H
#define DEFER_DLIST_H

#include "defer.h"

DFR_HIDDEN void dfr_dlist_open(lua_State *L, int module, int core);

#endif
