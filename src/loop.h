/*
** loop.h: the event queue.  Ready calls wait in a ring (first in, first out),
** timers in a binary min-heap keyed by (due time, sequence).  A pass of the
** loop is a frame of the engine, so every loop call runs from the driver.
** SPDX-License-Identifier: MIT
*/
#ifndef DEFER_LOOP_H
#define DEFER_LOOP_H

#include "defer.h"

DFR_HIDDEN void dfr_loop_open(lua_State *L, int module, int core);

#endif
