import { describe, it, expect } from 'vitest';
import { uniformSchedule, nonUniformSchedule } from '../src/schedule.js';

describe('cache schedules', () => {
  it('uniform 1:N', () => {
    expect(uniformSchedule(10, 3)).toEqual([0, 3, 6, 9]);
    expect(uniformSchedule(5, 1)).toEqual([0, 1, 2, 3, 4]);
  });
  it('non-uniform matches the reference outputs (complex-arithmetic quirk included)', () => {
    expect(nonUniformSchedule(50, 5, 15, 1.4).steps).toEqual([0, 5, 9, 13, 17, 21, 26, 31, 37, 43]);
    expect(nonUniformSchedule(50, 3, 15, 1.4).steps).toEqual([0, 3, 6, 8, 11, 13, 15, 17, 20, 22, 25, 28, 32, 35, 38, 42, 46]);
    expect(nonUniformSchedule(50, 2, 15, 1.4).steps).toEqual([0, 2, 4, 6, 7, 9, 11, 12, 14, 15, 17, 18, 20, 22, 24, 26, 28, 30, 32, 35, 37, 39, 42, 44, 47]);
    expect(nonUniformSchedule(100, 5, 30, 1.4).steps).toEqual([0, 5, 9, 14, 18, 22, 26, 30, 34, 38, 43, 47, 52, 58, 63, 69, 75, 81, 87, 93]);
  });
  it('rejects bad arguments', () => {
    expect(() => uniformSchedule(0, 2)).toThrow(/numSteps/);
    expect(() => uniformSchedule(10, 0)).toThrow(/interval/);
  });
});
