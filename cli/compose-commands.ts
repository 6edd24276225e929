import { Command } from 'commander';
import type { Context } from './main.js';

export function composeCommands(_program: Command, _ctx: Context): void {}
