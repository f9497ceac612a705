/*
** semaphore.h: defer.semaphore and defer.lock.
** SPDX-License-Identifier: MIT
*/
#ifndef DEFER_SEMAPHORE_H
#define DEFER_SEMAPHORE_H

#include "defer.h"

DFR_HIDDEN void dfr_semaphore_open(lua_State *L, int module, int core);

#endif
