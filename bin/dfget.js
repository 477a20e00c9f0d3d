#!/usr/bin/env node
'use strict';
require('../dist/src/cli/dfget.js').run();
